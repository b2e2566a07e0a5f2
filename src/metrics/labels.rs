//! The label values of every labelled metric, as enums: an emission helper
//! takes one of these, never a string, so a value that is emitted is by
//! construction a value that is declared (the catalog registers every
//! variant at zero from [`Label::variants`]). Adding a label value is adding
//! a variant here; nothing else changes.
//!
//! ```text
//! call site ──FrameRejected::Decode──▶ metrics::frame_rejected
//!           ──Label::value()──▶ "decode" ──▶ rtsync_frames_rejected_total{reason="decode"}
//! ```

use crate::protocol::messages::ClientEvent;
use crate::protocol::ServerEvent;

/// A metric's label values: the closed set its series are exported with.
pub trait Label: Copy + PartialEq + 'static {
    /// Every value, in the order the series are registered.
    fn variants() -> Vec<Self>;
    /// The exported label value (byte-identical to what Grafana queries).
    fn value(self) -> &'static str;
    /// Every exported value, for the catalog's registration at zero.
    fn values() -> Vec<&'static str> {
        Self::variants().into_iter().map(Self::value).collect()
    }
    /// The variant exported as `value`, for a label carried through a
    /// layer that cannot name the enum (e.g. an error's cause).
    fn from_value(value: &str) -> Option<Self> {
        Self::variants().into_iter().find(|v| v.value() == value)
    }
}

/// Declares a label enum with its exported values, so the value of each
/// variant is spelled once.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Label for $name {
            fn variants() -> Vec<Self> {
                vec![$($name::$variant),+]
            }
            fn value(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
}

label_enum! {
    /// `rtsync_connections{state}`: every open connection, and those of
    /// them that are authenticated.
    ConnectionState {
        Open => "open",
        Authenticated => "authenticated",
    }
}

label_enum! {
    /// `rtsync_fanout_frames_built_total{audience}`: the full field set, or
    /// a permission class with hidden fields.
    Audience {
        Full => "full",
        Masked => "masked",
    }
}

label_enum! {
    /// `rtsync_commits_total{status}`: a commit's answer, or `error` when
    /// Redis failed it.
    CommitOutcome {
        Applied => "applied",
        Merged => "merged",
        Overwritten => "overwritten",
        Rejected => "rejected",
        Duplicate => "duplicate",
        Error => "error",
    }
}

label_enum! {
    /// `rtsync_undo_total{status}`: an undo's or redo's answer
    /// (docs/protocol.md 3.3); `busy` when the stack kept changing under
    /// it, `error` when Redis failed it.
    UndoOutcome {
        Applied => "applied",
        Partial => "partial",
        Conflict => "conflict",
        Nothing => "nothing",
        Duplicate => "duplicate",
        Busy => "busy",
        Error => "error",
    }
}

label_enum! {
    /// `rtsync_redis_errors_total{kind}` (see `store::StoreError::label`).
    RedisErrorKind {
        Unavailable => "unavailable",
        Timeout => "timeout",
        Other => "other",
    }
}

label_enum! {
    /// `rtsync_frames_rejected_total{reason}`: which limit or rule a client
    /// frame broke (docs/protocol.md, limits).
    FrameRejected {
        TooLarge => "too_large",
        Decode => "decode",
        Invalid => "invalid",
        /// A long-polling request that breaks Engine.IO's rules.
        Protocol => "protocol",
        /// A refused binary event (its attachments).
        Attachments => "attachments",
        /// A long-polling POST body not received in time.
        Timeout => "timeout",
    }
}

label_enum! {
    /// `rtsync_auth_failures_total{reason}` (see `auth::AuthError::label`).
    AuthFailure {
        Missing => "missing",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        Invalid => "invalid",
        Claims => "claims",
        /// No authentication within the deadline.
        Timeout => "timeout",
        /// A request that needs authentication came before it.
        NotAuthenticated => "not_authenticated",
    }
}

label_enum! {
    /// `rtsync_audit_dropped_total{reason}`: why an audit record was not
    /// written.
    AuditDropped {
        /// Its source (address or user) was over `RTS_AUDIT_RATE_PER_MIN`.
        RateLimited => "rate_limited",
        /// The writer's queue was full.
        QueueFull => "queue_full",
        /// Redis refused or did not answer, after the retries.
        WriteFailed => "write_failed",
    }
}

label_enum! {
    /// `rtsync_connections_refused_total{reason}`: which connection limit.
    ConnectionRefused {
        SidecarFull => "sidecar_full",
        PerUser => "per_user",
        UnauthenticatedEvicted => "unauthenticated_evicted",
    }
}

label_enum! {
    /// `rtsync_writer_errors_total{kind}` (see the outbox's `WriteError`).
    WriterError {
        Timeout => "timeout",
        Failed => "failed",
    }
}

label_enum! {
    /// `rtsync_sink_deliveries_total{outcome}`: how a POST of the sink ended.
    SinkOutcome {
        Delivered => "delivered",
        Retried => "retried",
        DeadLettered => "dead_lettered",
    }
}

/// `rtsync_messages_in_total{event}`: a client frame by its event, or
/// `unknown` (a frame naming no event this server knows) or `invalid` (a
/// frame that could not be decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventIn {
    Client(ClientEvent),
    Unknown,
    Invalid,
}

impl Label for EventIn {
    fn variants() -> Vec<Self> {
        let known = ClientEvent::ALL.into_iter().map(EventIn::Client);
        known.chain([EventIn::Unknown, EventIn::Invalid]).collect()
    }
    fn value(self) -> &'static str {
        match self {
            EventIn::Client(e) => e.name(),
            EventIn::Unknown => "unknown",
            EventIn::Invalid => "invalid",
        }
    }
}

/// `rtsync_messages_out_total{event}`: every server event, by its name.
impl Label for ServerEvent {
    fn variants() -> Vec<Self> {
        ServerEvent::ALL.to_vec()
    }
    fn value(self) -> &'static str {
        self.name()
    }
}
