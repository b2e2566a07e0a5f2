//! The audit log (docs/protocol.md 12): sensitive operations recorded in
//! the deployment's audit stream `<p>:audit`, hash-chained by
//! `rtsync_audit` (`lua/audit.lua`) so a missing or edited entry is found
//! by `rtsync audit verify`.
//!
//! Data flow: a hook (the session's error edge, its end, the commit
//! handlers, the HTTP API, the start) builds an [`Entry`] and hands it to
//! [`Audit`], which stamps it (time, sidecar), lets failures through only
//! within their source's rate ([`limit`]), and queues it without waiting;
//! one [`writer`] task owns the queue and appends batches with one FCALL
//! each, off every request's path. A full queue drops the record, and
//! every drop is counted (`rtsync_audit_dropped_total{reason}`). [`read`]
//! serves `GET /api/v1/audit`; [`verify`] checks the chain.
//!
//! An entry holds ids, codes and short reasons, never field values and
//! never tokens.

pub mod limit;
pub mod read;
pub mod verify;
pub mod writer;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::change::ValidChange;
use crate::config::{AuthMode, Config};
use crate::metrics::AuditDropped;
use crate::protocol::error::Cause;
use crate::protocol::{CloseCode, ErrorCode, RequestError, SessionEnd};
use crate::store::commit::CommitStatus;

/// Records waiting for the writer, at most: past it, records are dropped.
pub const QUEUE: usize = 4096;
/// Sources whose rate is tracked one by one (see [`limit::Sources`]).
pub const MAX_SOURCES: usize = 4096;
/// Longest `detail` kept, in bytes (cut at a character boundary).
pub const MAX_DETAIL: usize = 256;

/// What an entry records (its `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    /// A token, an API token or a request before `authenticate` refused.
    AuthFailed,
    /// A request refused: `forbidden`, a grant, a limit by name, the rate.
    RequestRefused,
    /// A connection closed for abuse (4408 timeout or eviction, 4413, 4429).
    ConnectionClosed,
    /// A record deleted (the commit applied, merged or overwrote it).
    RecordDeleted,
    /// A deleted record brought back (undo of a delete).
    RecordUndeleted,
    /// `POST /api/v1/sync/batch-changes`.
    ApiBatchChanges,
    /// `POST /api/v1/sync/cleanup`.
    ApiCleanup,
    /// `POST /api/v1/sync/tables/:t/records` (a seed).
    ApiSeed,
    /// At start: a setting that widens access (`RTS_AUTH=none`, CORS `*`).
    AccessWidened,
    /// `PUT /api/v1/sync/tables/:t/views/:v` (v1.3: a view's filter).
    ApiView,
}

impl AuditAction {
    /// Every action, for the API's filter.
    pub const ALL: [AuditAction; 10] = [
        AuditAction::AuthFailed,
        AuditAction::RequestRefused,
        AuditAction::ConnectionClosed,
        AuditAction::RecordDeleted,
        AuditAction::RecordUndeleted,
        AuditAction::ApiBatchChanges,
        AuditAction::ApiCleanup,
        AuditAction::ApiSeed,
        AuditAction::AccessWidened,
        AuditAction::ApiView,
    ];

    /// Its name in an entry.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::AuthFailed => "auth_failed",
            AuditAction::RequestRefused => "request_refused",
            AuditAction::ConnectionClosed => "connection_closed",
            AuditAction::RecordDeleted => "record_deleted",
            AuditAction::RecordUndeleted => "record_undeleted",
            AuditAction::ApiBatchChanges => "api_batch_changes",
            AuditAction::ApiCleanup => "api_cleanup",
            AuditAction::ApiSeed => "api_seed",
            AuditAction::AccessWidened => "access_widened",
            AuditAction::ApiView => "api_view",
        }
    }

    /// The action named `name`.
    pub fn from_name(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// One audit record as the writer sends it to `rtsync_audit` (a JSON
/// object of strings; empty fields are left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub ts: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sidecar: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub actor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub addr: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub table_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub record_id: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Entry {
    /// An entry of `action` that ended with `outcome`.
    pub fn new(action: AuditAction, outcome: impl Into<String>) -> Entry {
        Entry {
            action: action.as_str(),
            outcome: outcome.into(),
            ..Entry::default()
        }
    }

    /// Who did it: a user id, or `"api"`.
    pub fn actor(mut self, actor: Option<&str>) -> Entry {
        self.actor = actor.unwrap_or_default().to_owned();
        self
    }

    pub fn addr(mut self, addr: Option<IpAddr>) -> Entry {
        self.addr = addr.map(|a| a.to_string()).unwrap_or_default();
        self
    }

    pub fn table(mut self, table: Option<&str>) -> Entry {
        self.table_id = table.unwrap_or_default().to_owned();
        self
    }

    pub fn record(mut self, record: &str) -> Entry {
        self.record_id = record.to_owned();
        self
    }

    /// A short text, cut to [`MAX_DETAIL`] bytes.
    pub fn detail(mut self, detail: &str) -> Entry {
        let mut end = detail.len().min(MAX_DETAIL);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        self.detail = detail[..end].to_owned();
        self
    }
}

/// The sidecar's audit log: stamps records and queues them for the
/// writer. Shared by every connection (in [`crate::app::App`]).
pub struct Audit {
    tx: mpsc::Sender<Entry>,
    sidecar: String,
    sources: Mutex<limit::Sources>,
    /// Records dropped for a full queue so far (for the log's pace).
    queue_drops: AtomicU64,
}

impl Audit {
    /// The log of sidecar `sidecar`, and the queue its writer reads.
    pub fn new(sidecar: String, rate_per_min: NonZeroU32) -> (Audit, mpsc::Receiver<Entry>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit = Audit {
            tx,
            sidecar,
            sources: Mutex::new(limit::Sources::new(rate_per_min, MAX_SOURCES)),
            queue_drops: AtomicU64::new(0),
        };
        (audit, rx)
    }

    /// Queues `entry` without waiting; a full queue drops it (counted).
    pub fn submit(&self, mut entry: Entry) {
        entry.ts = crate::now_ms().to_string();
        entry.sidecar.clone_from(&self.sidecar);
        if let Err(e) = self.tx.try_send(entry) {
            crate::metrics::audit_dropped(AuditDropped::QueueFull, 1);
            // Logged on the first drop and every 1000th, not on each: a
            // full queue means Redis is slow or gone, and stays so a while.
            let n = self.queue_drops.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                let action = match &e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => {
                        r.action
                    }
                };
                tracing::warn!(action, dropped = n + 1, "audit queue full: records dropped");
            }
        }
    }

    /// [`Audit::submit`] within `source`'s rate: a failure that a client
    /// can repeat at will is recorded at most `RTS_AUDIT_RATE_PER_MIN`
    /// times a minute per source (the rest counted as dropped).
    pub fn submit_limited(&self, source: &str, entry: Entry) {
        let allowed = crate::locks::lock(&self.sources).allow(source, std::time::Instant::now());
        if allowed {
            self.submit(entry);
        } else {
            crate::metrics::audit_dropped(AuditDropped::RateLimited, 1);
        }
    }

    /// A refused authentication from `addr` (`reason`: a short word, never
    /// the token).
    pub fn auth_failed(&self, addr: IpAddr, reason: &str) {
        let entry = Entry::new(AuditAction::AuthFailed, "refused")
            .addr(Some(addr))
            .detail(reason);
        self.submit_limited(&source_of(addr, None), entry);
    }

    /// A failed request of a connection, as answered at the session's
    /// error edge: authentication failures, `forbidden`,
    /// `payload_too_large` (its message names the limit), `rate_limited`,
    /// and the abuse closes they ask for. Other failures are not audited.
    pub fn refused(&self, addr: IpAddr, user: Option<&str>, e: &RequestError) {
        match &e.cause {
            Some(Cause::AuthRefused { reason, .. }) => return self.auth_failed(addr, reason),
            Some(Cause::NotAuthenticated) => return self.auth_failed(addr, "not_authenticated"),
            _ => {}
        }
        if !matches!(
            e.code,
            ErrorCode::Forbidden | ErrorCode::PayloadTooLarge | ErrorCode::RateLimited
        ) {
            return;
        }
        let entry = match e.close.filter(|c| c.for_abuse()) {
            Some(code) => Entry::new(AuditAction::ConnectionClosed, code.code().to_string())
                .detail(&format!("{}: {}", e.code.as_str(), e.message)),
            None => Entry::new(AuditAction::RequestRefused, e.code.as_str()).detail(&e.message),
        };
        let entry = entry.actor(user).addr(Some(addr));
        self.submit_limited(&source_of(addr, user), entry);
    }

    /// A connection closed for abuse by the server without an error
    /// answered at the edge (see [`Audit::session_ended`]).
    pub fn closed(&self, addr: IpAddr, user: Option<&str>, code: CloseCode, why: &str) {
        let entry = Entry::new(AuditAction::ConnectionClosed, code.code().to_string())
            .actor(user)
            .addr(Some(addr))
            .detail(why);
        self.submit_limited(&source_of(addr, user), entry);
    }

    /// How a session ended, given the close code its outbox sent (`sent`):
    /// a 4413 or 4408 its end decided, or a 4408 eviction (the connection
    /// pushed out while waiting to authenticate), is audited. (A 4429 is
    /// audited where it is decided: the error edge, the rate limit.)
    pub fn session_ended(
        &self,
        addr: IpAddr,
        user: Option<&str>,
        end: SessionEnd,
        sent: Option<u16>,
    ) {
        match end.close_code() {
            // A 4429 is never an end's own close code.
            Some(code) if code.for_abuse() => self.closed(addr, user, code, end.label()),
            None if end == SessionEnd::ClosedByServer
                && sent == Some(CloseCode::AuthTimeout.code()) =>
            {
                self.closed(addr, user, CloseCode::AuthTimeout, "evicted");
            }
            _ => {}
        }
    }

    /// A committed change of a session's user: a record deleted (applied,
    /// merged or overwritten) is audited; nothing else is.
    pub fn committed(&self, addr: IpAddr, user: &str, valid: &ValidChange, status: CommitStatus) {
        if valid.req.entity_type != "record" || valid.req.kind != "delete" {
            return;
        }
        if !matches!(
            status,
            CommitStatus::Applied | CommitStatus::Merged | CommitStatus::Overwritten
        ) {
            return;
        }
        self.record_changed(
            AuditAction::RecordDeleted,
            Some(addr),
            user,
            valid.req.table_id.as_deref().unwrap_or_default(),
            &valid.req.entity_id,
            status,
        );
    }

    /// A record deleted or undeleted (`action`) by `user`, with its
    /// commit's status: for undo, which can undelete.
    pub fn record_changed(
        &self,
        action: AuditAction,
        addr: Option<IpAddr>,
        user: &str,
        table: &str,
        record: &str,
        status: CommitStatus,
    ) {
        let outcome = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.submit(
            Entry::new(action, outcome)
                .actor(Some(user))
                .addr(addr)
                .table(Some(table))
                .record(record),
        );
    }

    /// An HTTP API bulk operation by the API token's holder.
    pub fn api(
        &self,
        action: AuditAction,
        addr: IpAddr,
        table: Option<&str>,
        outcome: &str,
        detail: &str,
    ) {
        self.submit(
            Entry::new(action, outcome)
                .actor(Some("api"))
                .addr(Some(addr))
                .table(table)
                .detail(detail),
        );
    }

    /// At start: each setting that widens access.
    pub fn settings_at_start(&self, config: &Config) {
        if config.auth == AuthMode::None {
            self.submit(Entry::new(AuditAction::AccessWidened, "started").detail("RTS_AUTH=none"));
        }
        if config.cors_origins.iter().any(|o| o.trim() == "*") {
            self.submit(
                Entry::new(AuditAction::AccessWidened, "started").detail("RTS_CORS_ORIGINS=*"),
            );
        }
    }
}

/// The sidecar's audit log and its writer (spawned on `tasks`): the log,
/// and the token that stops the writer once it has written what is queued.
/// The settings that widen access are recorded first.
pub fn start(
    store: &std::sync::Arc<crate::store::Store>,
    config: &Config,
    tasks: &tokio_util::task::TaskTracker,
) -> (Audit, tokio_util::sync::CancellationToken) {
    let (audit, queue) = Audit::new(store.instance_id.clone(), config.audit_rate_per_min);
    let stop = tokio_util::sync::CancellationToken::new();
    tasks.spawn(writer::run(
        store.clone(),
        queue,
        config.audit_retention,
        stop.clone(),
    ));
    audit.settings_at_start(config);
    (audit, stop)
}

/// The rate-limit source of a record: the user when known, else the
/// address.
fn source_of(addr: IpAddr, user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user:{u}"),
        None => format!("addr:{addr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(rate: u32) -> (Audit, mpsc::Receiver<Entry>) {
        Audit::new(
            "s1".into(),
            NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN),
        )
    }

    fn addr() -> IpAddr {
        IpAddr::from([10, 0, 0, 1])
    }

    #[test]
    fn a_refused_token_is_recorded_by_its_reason_and_address_only() {
        let (log, mut rx) = audit(10);
        let e = crate::session::edge::auth_refused(&crate::auth::AuthError::Expired);
        log.refused(addr(), None, &e);
        let entry = rx.try_recv().expect("an entry");
        assert_eq!(entry.action, "auth_failed");
        assert_eq!(entry.addr, "10.0.0.1");
        assert_eq!(entry.detail, "expired");
        assert_eq!(entry.sidecar, "s1");
    }

    #[test]
    fn a_bad_request_is_not_audited() {
        let (log, mut rx) = audit(10);
        log.refused(addr(), Some("u1"), &RequestError::bad_request("no"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_closing_refusal_is_recorded_as_the_close() {
        let (log, mut rx) = audit(10);
        log.refused(
            addr(),
            None,
            &crate::session::edge::too_many_connections("u1", 2),
        );
        let entry = rx.try_recv().expect("an entry");
        assert_eq!(entry.action, "connection_closed");
        assert_eq!(entry.outcome, "4429");
    }

    #[test]
    fn failures_past_the_sources_rate_are_dropped() {
        let (log, mut rx) = audit(3);
        for _ in 0..10 {
            log.auth_failed(addr(), "invalid");
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn a_detail_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let entry = Entry::new(AuditAction::ApiSeed, "ok").detail(&long);
        assert!(entry.detail.len() <= MAX_DETAIL);
        assert!(entry.detail.chars().all(|c| c == 'é'));
    }
}
