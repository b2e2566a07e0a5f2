//! Engine.IO long-polling sessions: the registry of the sessions a server
//! holds (by `sid`), and each session's link between the HTTP requests
//! ([`super::endpoint`]) and the session behind them (an rtsync session,
//! or an application of the standalone layer).
//!
//! A session's rules (the Engine.IO protocol's): at most one GET and one
//! POST at a time (a second is a protocol error that closes the session);
//! after an upgrade to WebSocket, polling requests are refused. A request
//! naming a `sid` this sidecar does not hold (another sidecar's, or one
//! that closed) is refused at once; so is one after the client's close,
//! but for the poll that close ended.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::locks::lock;
use crate::outbox::long_poll::PollCmd;
use crate::outbox::pipe::{pipe, PipeReceiver, PipeSender};

/// The input channel's messages.
type InputMessage = Result<Message, WsError>;
/// Client messages buffered between a POST and its session.
const INPUT_QUEUE: usize = 64;
/// Requests to a session's writer in flight (a GET, the probe, the upgrade).
const CMD_QUEUE: usize = 4;

/// One long-polling session's link to its rtsync session. The session and
/// its channels start with the client's first GET, POST or upgrade: a
/// handshake that is never followed by one holds no more than this link
/// and the connection's outbox until it is closed.
pub struct Link {
    /// The channels, once the session started.
    channels: OnceLock<Channels>,
    /// Hands the receiving ends to the session, on its start.
    start: Mutex<Option<oneshot::Sender<Started>>>,
    /// Which requests it may take now.
    pub rules: Rules,
    /// The client closed the session (Engine.IO's `1` in a POST).
    closed: AtomicBool,
    /// The poll the close ended was answered (with a no-op).
    last_poll: AtomicBool,
    /// A WebSocket is upgrading the session (its probe is under way).
    upgrading: AtomicBool,
    /// Told when the upgrade completes.
    upgraded: Notify,
}

/// The HTTP side's ends of a started session's channels.
pub struct Channels {
    /// Requests to its writer (GETs, the probe, the upgrade).
    pub cmds: PipeSender<PollCmd>,
    /// Client messages to its session, in order.
    pub input: PipeSender<InputMessage>,
}

/// The session's ends, handed over when it starts.
pub struct Started {
    pub cmds: PipeReceiver<PollCmd>,
    pub input: PipeReceiver<InputMessage>,
}

/// A polling session's request rules: one GET and one POST in flight at a
/// time, none after the upgrade. Shared by rtsync's sessions and the
/// standalone server's ([`super::server`]).
#[derive(Default)]
pub struct Rules {
    get_busy: AtomicBool,
    post_busy: AtomicBool,
    upgraded: AtomicBool,
}

/// A request that breaks the session's rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Violation {
    /// A second GET (or POST) while one is pending.
    Concurrent,
    /// Polling after the session upgraded to WebSocket.
    Upgraded,
}

/// Marks a request in flight until dropped.
pub struct InFlight<'a>(&'a AtomicBool);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Link {
    /// A link whose session starts when `start` receives its channels.
    pub fn new(start: oneshot::Sender<Started>) -> Link {
        Link {
            channels: OnceLock::new(),
            start: Mutex::new(Some(start)),
            rules: Rules::default(),
            closed: AtomicBool::new(false),
            last_poll: AtomicBool::new(false),
            upgrading: AtomicBool::new(false),
            upgraded: Notify::new(),
        }
    }

    /// A WebSocket starts upgrading the session; false when another one
    /// is upgrading it already (or it upgraded).
    pub fn begin_upgrade(&self) -> bool {
        !self.rules.upgraded() && !self.upgrading.swap(true, Ordering::AcqRel)
    }

    /// The upgrade did not complete: another WebSocket may try.
    pub fn upgrade_failed(&self) {
        self.upgrading.store(false, Ordering::Release);
    }

    /// The upgrade completed (see [`Rules::upgrade`]); false if it had.
    pub fn complete_upgrade(&self) -> bool {
        let first = self.rules.upgrade();
        self.upgraded.notify_waiters();
        first
    }

    /// Waits, at most [`UPGRADE_SETTLE`], for an upgrade under way to
    /// complete: the client may have sent `5` already on its WebSocket,
    /// which a single-threaded server would have read before this request.
    pub async fn settle_upgrade(&self) {
        let settled = self.upgraded.notified();
        if self.upgrading.load(Ordering::Acquire) && !self.rules.upgraded() {
            let _ = tokio::time::timeout(UPGRADE_SETTLE, settled).await;
        }
    }

    /// The client closed the session: from now on its sid takes no
    /// request, but for one poll (see [`Link::take_last_poll`]).
    pub fn close_by_client(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn closed_by_client(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True once after the client closed: for the poll its close ended,
    /// whether it was parked before the close or its GET was handled just
    /// after it (a client's pending GET and its closing POST travel on two
    /// connections, in no set order).
    pub fn take_last_poll(&self) -> bool {
        !self.last_poll.swap(true, Ordering::AcqRel)
    }

    /// The session's channels, starting it on first use. A session that
    /// is gone leaves channels whose sends fail.
    pub fn channels(&self) -> &Channels {
        self.channels.get_or_init(|| {
            let (cmds, cmds_rx) = pipe(CMD_QUEUE);
            let (input, input_rx) = pipe(INPUT_QUEUE);
            if let Some(start) = lock(&self.start).take() {
                let _ = start.send(Started {
                    cmds: cmds_rx,
                    input: input_rx,
                });
            }
            Channels { cmds, input }
        })
    }

    /// The channels if the session started.
    pub fn started(&self) -> Option<&Channels> {
        self.channels.get()
    }
}

impl Rules {
    fn begin<'a>(&'a self, flag: &'a AtomicBool) -> Result<InFlight<'a>, Violation> {
        if self.upgraded.load(Ordering::Acquire) {
            return Err(Violation::Upgraded);
        }
        if flag.swap(true, Ordering::AcqRel) {
            return Err(Violation::Concurrent);
        }
        Ok(InFlight(flag))
    }

    /// A GET begins (until the guard drops).
    pub fn begin_get(&self) -> Result<InFlight<'_>, Violation> {
        self.begin(&self.get_busy)
    }

    /// A POST begins (until the guard drops).
    pub fn begin_post(&self) -> Result<InFlight<'_>, Violation> {
        self.begin(&self.post_busy)
    }

    /// The session moved to a WebSocket; false if it had already.
    pub fn upgrade(&self) -> bool {
        !self.upgraded.swap(true, Ordering::AcqRel)
    }

    pub fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Acquire)
    }
}

/// How long a polling request that comes while an upgrade is under way
/// waits for it (see [`Link::settle_upgrade`]).
pub const UPGRADE_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a client may take over the upgrade's probe and `5`.
pub const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The first step of an upgrade, on the new WebSocket: the client's
/// `2probe` (answered `3probe` by the caller).
pub async fn read_probe<S, E>(stream: &mut S) -> Result<(), &'static str>
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    use futures_util::StreamExt;
    match stream.next().await {
        Some(Ok(Message::Text(t))) if t.as_str() == "2probe" => Ok(()),
        _ => Err("no probe"),
    }
}

/// The last step: the client's `5` (upgrade). Other text packets of the
/// probe phase (a ping, a no-op) are skipped.
pub async fn read_upgrade<S, E>(stream: &mut S) -> Result<(), &'static str>
where
    S: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    use futures_util::StreamExt;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "5" => return Ok(()),
            Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err("no upgrade packet"),
        }
    }
}

/// A fresh id: 128 bits nobody can guess (the std hasher's keys come from
/// the OS's randomness), so a session cannot be joined by another client.
/// `n` makes two ids of one process distinct.
pub fn random_id(n: u64) -> String {
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// The long-polling sessions a server holds, by `sid`.
pub struct Registry<L = Link> {
    sessions: Mutex<HashMap<String, Arc<L>>>,
    seq: AtomicU64,
}

impl<L> Default for Registry<L> {
    fn default() -> Self {
        Registry {
            sessions: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
        }
    }
}

impl<L> Registry<L> {
    /// A fresh session id: 128 bits nobody can guess (the std hasher's
    /// keys come from the OS's randomness), so a session cannot be joined
    /// by another client.
    pub fn new_sid(&self) -> String {
        random_id(self.seq.fetch_add(1, Ordering::Relaxed))
    }

    pub fn insert(&self, sid: String, link: Arc<L>) {
        lock(&self.sessions).insert(sid, link);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<L>> {
        lock(&self.sessions).get(sid).cloned()
    }

    /// Forgets a session: its link (and so its input) is dropped, which
    /// ends the session behind it.
    pub fn remove(&self, sid: &str) -> Option<Arc<L>> {
        lock(&self.sessions).remove(sid)
    }

    /// Forgets a session unless `keep` says otherwise of its link.
    pub fn remove_unless(&self, sid: &str, keep: impl FnOnce(&L) -> bool) {
        let mut sessions = lock(&self.sessions);
        if sessions.get(sid).is_some_and(|l| !keep(l)) {
            sessions.remove(sid);
        }
    }

    /// How many sessions it holds.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Rules {
        Rules::default()
    }

    #[test]
    fn a_second_get_or_post_in_flight_is_a_violation() {
        let l = link();
        let get = l.begin_get().unwrap();
        assert_eq!(l.begin_get().err(), Some(Violation::Concurrent));
        let _post = l.begin_post().unwrap();
        assert_eq!(l.begin_post().err(), Some(Violation::Concurrent));
        drop(get);
        assert!(l.begin_get().is_ok());
    }

    #[test]
    fn polling_after_the_upgrade_is_refused() {
        let l = link();
        assert!(l.upgrade());
        assert!(!l.upgrade());
        assert_eq!(l.begin_get().err(), Some(Violation::Upgraded));
        assert_eq!(l.begin_post().err(), Some(Violation::Upgraded));
    }

    #[test]
    fn session_ids_are_long_and_distinct() {
        let r = Registry::<Link>::default();
        let (a, b) = (r.new_sid(), r.new_sid());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
