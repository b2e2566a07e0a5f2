//! Why a connection ends, typed: the WebSocket close codes the server sends
//! ([`CloseCode`], docs/protocol.md's close codes; each number is written
//! once, here) and the ends of a session ([`SessionEnd`]), each knowing its close
//! code, its log message and its metric label.
//!
//! Data flow: a session's read loop (rtsync's `session::serve`, or the
//! standalone Engine.IO layer's `socketio::server::session`) returns a
//! [`SessionEnd`]; the session asks its outbox to close with the end's
//! [`CloseCode`], and the outbox's writer sends that code (and its
//! [`CloseCode::reason`]) in the close frame.

/// A WebSocket close code the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the session ended normally.
    Normal,
    /// 1001: the peer stopped answering (heartbeat).
    GoingAway,
    /// 1002: the client broke its transport's rules (Engine.IO
    /// long-polling, or a packet that does not parse).
    ProtocolError,
    /// 1011: a frame could not be written (the socket failed or refused it).
    SendFailed,
    /// 4401: authentication refused, token expired, or a request before
    /// `authenticate`.
    Unauthenticated,
    /// 4408: not authenticated in time (or evicted while waiting).
    AuthTimeout,
    /// 4413: a frame over the size bound.
    FrameTooLarge,
    /// 4429: rate-limit abuse, or too many connections of one user.
    RateLimited,
    /// 4500: the server is shutting down.
    ShuttingDown,
    /// 4503: the client did not read its frames in time.
    SlowConsumer,
}

/// What the protocol tells a client to do after a close (docs/protocol.md
/// its close codes), where it says anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect (to any sidecar) and `recover_connection` every table.
    AndRecover,
}

impl CloseCode {
    /// Every close code, for tests and tables.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::SendFailed,
        CloseCode::Unauthenticated,
        CloseCode::AuthTimeout,
        CloseCode::FrameTooLarge,
        CloseCode::RateLimited,
        CloseCode::ShuttingDown,
        CloseCode::SlowConsumer,
    ];

    /// Its number on the wire.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::SendFailed => 1011,
            CloseCode::Unauthenticated => 4401,
            CloseCode::AuthTimeout => 4408,
            CloseCode::FrameTooLarge => 4413,
            CloseCode::RateLimited => 4429,
            CloseCode::ShuttingDown => 4500,
            CloseCode::SlowConsumer => 4503,
        }
    }

    /// The close code a number is, if the server sends it.
    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The reason text of its close frame (empty for the standard codes).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal | CloseCode::GoingAway | CloseCode::ProtocolError => "",
            CloseCode::Unauthenticated => "unauthenticated",
            CloseCode::AuthTimeout => "authentication timeout",
            CloseCode::FrameTooLarge => "frame too large",
            CloseCode::RateLimited => "rate limit exceeded",
            CloseCode::ShuttingDown => "server shutting down",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::SendFailed => "send failed",
        }
    }

    /// Whether the server closes with it for abuse (the audit log records
    /// these closes): 4408, 4413, 4429.
    pub fn for_abuse(self) -> bool {
        matches!(
            self,
            CloseCode::AuthTimeout | CloseCode::FrameTooLarge | CloseCode::RateLimited
        )
    }

    /// What the client should do after this close, where the protocol
    /// says: after a shutdown or a slow-consumer close it reconnects and
    /// recovers.
    pub fn reconnect(self) -> Option<Reconnect> {
        match self {
            CloseCode::ShuttingDown | CloseCode::SlowConsumer => Some(Reconnect::AndRecover),
            _ => None,
        }
    }
}

/// Why a session ended. rtsync's sessions end with the first eleven; the
/// standalone Engine.IO layer with the shared ones and its own last four.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server is shutting down (4500).
    ShuttingDown,
    /// The outbox was closed already (a slow consumer, a failed write, a
    /// refused request, an eviction): its code was sent.
    ClosedByServer,
    /// Not authenticated within the deadline (4408).
    AuthTimeout,
    /// The token's `exp` passed (4401).
    TokenExpired,
    /// Nothing heard from the peer (1001).
    PeerSilent,
    /// Engine.IO's pong did not come in time (1001).
    PingTimeout,
    /// The client's socket (or polling link) ended.
    ClientGone,
    /// The client sent a close (WebSocket's, or Engine.IO's).
    ClientClosed,
    /// A frame over 16 KiB before `authenticate` (4413).
    LargeFrameBeforeAuth,
    /// A frame over `RTS_MAX_FRAME_BYTES` (4413).
    FrameTooLarge,
    /// Reading the socket failed.
    ReadError,
    /// A long-polling session was never polled before its deadline.
    NeverPolled,
    /// A long-polling session closed before its first poll.
    ClosedBeforePolled,
    /// A long-polling session silent past its heartbeat before its first
    /// poll.
    PingTimeoutBeforePolled,
    /// Standalone layer: the application ended the session (1000 after
    /// Engine.IO's close packet).
    AppClosed,
    /// Standalone layer: the server stopped (as [`SessionEnd::AppClosed`]).
    Stopped,
    /// Standalone layer: the client's transport failed or broke its rules
    /// (1002).
    TransportError,
    /// Standalone layer: a packet that does not parse (1002).
    ParseError,
}

impl SessionEnd {
    /// The close code this end sends, if it sends one itself (`None`: the
    /// client is gone, or the code was sent already; the session then
    /// closes normally).
    pub fn close_code(self) -> Option<CloseCode> {
        match self {
            SessionEnd::ShuttingDown => Some(CloseCode::ShuttingDown),
            SessionEnd::AuthTimeout
            | SessionEnd::NeverPolled
            | SessionEnd::ClosedBeforePolled
            | SessionEnd::PingTimeoutBeforePolled => Some(CloseCode::AuthTimeout),
            SessionEnd::TokenExpired => Some(CloseCode::Unauthenticated),
            SessionEnd::PeerSilent | SessionEnd::PingTimeout => Some(CloseCode::GoingAway),
            SessionEnd::LargeFrameBeforeAuth | SessionEnd::FrameTooLarge => {
                Some(CloseCode::FrameTooLarge)
            }
            SessionEnd::TransportError | SessionEnd::ParseError => Some(CloseCode::ProtocolError),
            SessionEnd::AppClosed | SessionEnd::Stopped => Some(CloseCode::Normal),
            SessionEnd::ClosedByServer
            | SessionEnd::ClientGone
            | SessionEnd::ClientClosed
            | SessionEnd::ReadError => None,
        }
    }

    /// The `reason` of the "connection closed" log line.
    pub fn message(self) -> &'static str {
        match self {
            SessionEnd::ShuttingDown => "server shutting down",
            SessionEnd::ClosedByServer => "closed by server",
            SessionEnd::AuthTimeout => "authentication timeout",
            SessionEnd::TokenExpired => "token expired",
            SessionEnd::PeerSilent => "peer silent",
            SessionEnd::PingTimeout => "ping timeout",
            SessionEnd::ClientGone => "client went away",
            SessionEnd::ClientClosed => "client closed",
            SessionEnd::LargeFrameBeforeAuth => "large frame before authenticate",
            SessionEnd::FrameTooLarge => "frame too large",
            SessionEnd::ReadError => "read error",
            SessionEnd::NeverPolled => "never polled",
            SessionEnd::ClosedBeforePolled => "closed before it was polled",
            SessionEnd::PingTimeoutBeforePolled => "ping timeout before it was polled",
            SessionEnd::AppClosed => "closed by the application",
            SessionEnd::Stopped => "server stopped",
            SessionEnd::TransportError => "transport error",
            SessionEnd::ParseError => "parse error",
        }
    }

    /// Its label (snake case, bounded): the `end` field of the
    /// "connection closed" log line, and a metric's label when one counts ends.
    pub fn label(self) -> &'static str {
        match self {
            SessionEnd::ShuttingDown => "shutting_down",
            SessionEnd::ClosedByServer => "closed_by_server",
            SessionEnd::AuthTimeout => "auth_timeout",
            SessionEnd::TokenExpired => "token_expired",
            SessionEnd::PeerSilent => "peer_silent",
            SessionEnd::PingTimeout => "ping_timeout",
            SessionEnd::ClientGone => "client_gone",
            SessionEnd::ClientClosed => "client_closed",
            SessionEnd::LargeFrameBeforeAuth => "large_frame_before_auth",
            SessionEnd::FrameTooLarge => "frame_too_large",
            SessionEnd::ReadError => "read_error",
            SessionEnd::NeverPolled => "never_polled",
            SessionEnd::ClosedBeforePolled => "closed_before_polled",
            SessionEnd::PingTimeoutBeforePolled => "ping_timeout_before_polled",
            SessionEnd::AppClosed => "app_closed",
            SessionEnd::Stopped => "stopped",
            SessionEnd::TransportError => "transport_error",
            SessionEnd::ParseError => "parse_error",
        }
    }

    /// What the client should do next, where the protocol says.
    pub fn reconnect(self) -> Option<Reconnect> {
        self.close_code().and_then(CloseCode::reconnect)
    }

    /// The client ended the session or stopped answering (its Engine.IO
    /// sid is forgotten at once).
    pub fn client_gone(self) -> bool {
        matches!(
            self,
            SessionEnd::ClientGone
                | SessionEnd::ClientClosed
                | SessionEnd::ReadError
                | SessionEnd::PingTimeout
                | SessionEnd::TransportError
        )
    }

    /// The server ended the session (a close code it sent), rather than
    /// the client: input is drained for a moment so the client reads it.
    pub fn server_closed(self) -> bool {
        !matches!(
            self,
            SessionEnd::ClientGone | SessionEnd::ClientClosed | SessionEnd::ReadError
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_has_its_number_once() {
        let numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            numbers,
            [1000, 1001, 1002, 1011, 4401, 4408, 4413, 4429, 4500, 4503]
        );
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(4000), None);
    }

    #[test]
    fn close_reasons_name_the_rtsync_codes_only() {
        assert_eq!(CloseCode::Unauthenticated.reason(), "unauthenticated");
        assert_eq!(CloseCode::RateLimited.reason(), "rate limit exceeded");
        assert_eq!(CloseCode::Normal.reason(), "");
        assert_eq!(CloseCode::GoingAway.reason(), "");
    }

    #[test]
    fn shutdown_and_slow_consumer_ask_to_reconnect_and_recover() {
        assert_eq!(
            SessionEnd::ShuttingDown.reconnect(),
            Some(Reconnect::AndRecover)
        );
        assert_eq!(
            CloseCode::SlowConsumer.reconnect(),
            Some(Reconnect::AndRecover)
        );
        assert_eq!(SessionEnd::TokenExpired.reconnect(), None);
    }

    #[test]
    fn each_session_end_sends_its_close_code() {
        let cases = [
            (SessionEnd::ShuttingDown, Some(4500)),
            (SessionEnd::ClosedByServer, None),
            (SessionEnd::AuthTimeout, Some(4408)),
            (SessionEnd::TokenExpired, Some(4401)),
            (SessionEnd::PeerSilent, Some(1001)),
            (SessionEnd::PingTimeout, Some(1001)),
            (SessionEnd::ClientGone, None),
            (SessionEnd::ClientClosed, None),
            (SessionEnd::LargeFrameBeforeAuth, Some(4413)),
            (SessionEnd::FrameTooLarge, Some(4413)),
            (SessionEnd::ReadError, None),
            (SessionEnd::NeverPolled, Some(4408)),
            (SessionEnd::AppClosed, Some(1000)),
            (SessionEnd::Stopped, Some(1000)),
            (SessionEnd::TransportError, Some(1002)),
            (SessionEnd::ParseError, Some(1002)),
        ];
        for (end, code) in cases {
            assert_eq!(end.close_code().map(CloseCode::code), code, "{end:?}");
        }
    }

    #[test]
    fn session_ends_keep_their_log_messages_and_labels() {
        assert_eq!(SessionEnd::AuthTimeout.message(), "authentication timeout");
        assert_eq!(SessionEnd::ClientGone.message(), "client went away");
        assert_eq!(SessionEnd::AuthTimeout.label(), "auth_timeout");
        assert_eq!(
            SessionEnd::LargeFrameBeforeAuth.label(),
            "large_frame_before_auth"
        );
    }

    #[test]
    fn only_the_clients_own_ends_skip_the_close_drain() {
        assert!(!SessionEnd::ClientClosed.server_closed());
        assert!(!SessionEnd::ReadError.server_closed());
        assert!(SessionEnd::PingTimeout.server_closed());
        assert!(SessionEnd::PingTimeout.client_gone());
        assert!(!SessionEnd::TokenExpired.client_gone());
    }
}
