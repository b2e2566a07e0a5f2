//! The events the server sends (docs/protocol.md section 4), named once:
//! their wire names, the metric label of each, and which come from the
//! presence functions.

/// An event the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerEvent {
    Ack,
    Error,
    Authenticated,
    TableUsers,
    RecentChanges,
    MissedEvents,
    ConnectionRecovered,
    ResyncRequired,
    RecordChange,
    BatchChanges,
    UserJoined,
    UserReconnected,
    UserLeft,
    CursorPosition,
    Selection,
    OfflineChanges,
    OfflineSyncComplete,
    HeartbeatAck,
    UserEditing,
    UserViewport,
    RecordEnteredView,
    RecordLeftView,
}

impl ServerEvent {
    pub const ALL: [ServerEvent; 22] = [
        ServerEvent::Ack,
        ServerEvent::Error,
        ServerEvent::Authenticated,
        ServerEvent::TableUsers,
        ServerEvent::RecentChanges,
        ServerEvent::MissedEvents,
        ServerEvent::ConnectionRecovered,
        ServerEvent::ResyncRequired,
        ServerEvent::RecordChange,
        ServerEvent::BatchChanges,
        ServerEvent::UserJoined,
        ServerEvent::UserReconnected,
        ServerEvent::UserLeft,
        ServerEvent::CursorPosition,
        ServerEvent::Selection,
        ServerEvent::OfflineChanges,
        ServerEvent::OfflineSyncComplete,
        ServerEvent::HeartbeatAck,
        ServerEvent::UserEditing,
        ServerEvent::UserViewport,
        ServerEvent::RecordEnteredView,
        ServerEvent::RecordLeftView,
    ];

    /// The notices the presence functions publish on a table's channel
    /// (`lua/presence.lua`), relayed to the table's subscribers as they are.
    pub const PRESENCE: [ServerEvent; 7] = [
        ServerEvent::UserJoined,
        ServerEvent::UserReconnected,
        ServerEvent::UserLeft,
        ServerEvent::CursorPosition,
        ServerEvent::Selection,
        ServerEvent::UserEditing,
        ServerEvent::UserViewport,
    ];

    /// Its name on the wire, and its `event` label in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ServerEvent::Ack => "ack",
            ServerEvent::Error => "error",
            ServerEvent::Authenticated => "authenticated",
            ServerEvent::TableUsers => "table_users",
            ServerEvent::RecentChanges => "recent_changes",
            ServerEvent::MissedEvents => "missed_events",
            ServerEvent::ConnectionRecovered => "connection_recovered",
            ServerEvent::ResyncRequired => "resync_required",
            ServerEvent::RecordChange => "record_change",
            ServerEvent::BatchChanges => "batch_changes",
            ServerEvent::UserJoined => "user_joined",
            ServerEvent::UserReconnected => "user_reconnected",
            ServerEvent::UserLeft => "user_left",
            ServerEvent::CursorPosition => "cursor_position",
            ServerEvent::Selection => "selection",
            ServerEvent::OfflineChanges => "offline_changes",
            ServerEvent::OfflineSyncComplete => "offline_sync_complete",
            ServerEvent::HeartbeatAck => "heartbeat_ack",
            ServerEvent::UserEditing => "user_editing",
            ServerEvent::UserViewport => "user_viewport",
            ServerEvent::RecordEnteredView => "record_entered_view",
            ServerEvent::RecordLeftView => "record_left_view",
        }
    }

    /// A presence notice's event, if it is one.
    pub fn presence(name: &str) -> Option<ServerEvent> {
        ServerEvent::PRESENCE.into_iter().find(|e| e.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::ServerEvent;

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = ServerEvent::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ServerEvent::ALL.len());
    }
}
