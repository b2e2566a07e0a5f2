//! The Redis key layout (PROTOCOL.md section 7). Every key of a table carries
//! `{tableId}` as its Redis Cluster hash tag, so one table lives in one slot.
//! Ids are validated before they get here (no `{`/`}`), so the tag is sound.

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn events(&self, table: &str) -> String {
        format!("{}:{{{table}}}:events", self.prefix)
    }

    pub fn base_events(&self, base: &str) -> String {
        format!("{}:{{{base}}}:base-events", self.prefix)
    }

    pub fn record(&self, table: &str, record: &str) -> String {
        format!("{}:{{{table}}}:rec:{record}", self.prefix)
    }

    /// The table's record index (sorted set of record ids, score 0).
    pub fn records(&self, table: &str) -> String {
        format!("{}:{{{table}}}:records", self.prefix)
    }

    /// Versions of non-record entities of a table (or of a base).
    pub fn versions(&self, scope: &str) -> String {
        format!("{}:{{{scope}}}:ver", self.prefix)
    }

    /// A clientChangeId's first answer, scoped to its user and table; the
    /// user id's length keeps the key unambiguous (ids may contain ':').
    pub fn dedup(&self, scope: &str, user: &str, client_change_id: &str) -> String {
        format!(
            "{}:{{{scope}}}:cc:{}:{user}:{client_change_id}",
            self.prefix,
            user.len()
        )
    }

    /// The sink's dead-letter stream of a table (PROTOCOL.md section 9).
    pub fn dead(&self, table: &str) -> String {
        format!("{}:{{{table}}}:dead", self.prefix)
    }

    /// Which sink process owns a table's delivery (`rtsync_sink_lease`).
    pub fn sink_lease(&self, table: &str) -> String {
        format!("{}:{{{table}}}:sink-lease", self.prefix)
    }

    /// The time (ms) below which the table's stream may be trimmed: the
    /// oldest entry the sink has not acknowledged (kept by `rtsync sink`).
    pub fn sink_floor(&self, table: &str) -> String {
        format!("{}:{{{table}}}:sink-floor", self.prefix)
    }

    /// Live sink processes: a sorted set of instance id -> last seen (ms).
    pub fn sinks(&self) -> String {
        format!("{}:sinks", self.prefix)
    }

    /// The pattern of every table stream, for SCAN.
    pub fn events_pattern(&self) -> String {
        format!("{}:{{*}}:events", self.prefix)
    }

    pub fn presence(&self, table: &str) -> String {
        format!("{}:{{{table}}}:presence", self.prefix)
    }

    pub fn seen(&self, table: &str) -> String {
        format!("{}:{{{table}}}:seen", self.prefix)
    }

    pub fn colors(&self, table: &str) -> String {
        format!("{}:{{{table}}}:colors", self.prefix)
    }

    /// The sharded pub/sub channel of a table's presence notices (same name
    /// as the presence hash; channels and keys are separate namespaces).
    pub fn presence_channel(&self, table: &str) -> String {
        self.presence(table)
    }

    /// The set of tables that may hold presence, for the sweeper.
    pub fn presence_tables(&self) -> String {
        format!("{}:presence-tables", self.prefix)
    }

    /// The lock that lets one sweeper run at a time across the fleet.
    pub fn sweeper_lock(&self) -> String {
        format!("{}:presence-sweeper", self.prefix)
    }

    /// Marks a live sidecar (expires when it stops refreshing it).
    pub fn instance(&self, instance_id: &str) -> String {
        format!("{}:instance:{instance_id}", self.prefix)
    }

    /// The set of tables whose streams have had consumer groups.
    pub fn streams(&self) -> String {
        format!("{}:streams", self.prefix)
    }

    /// The table id of a presence channel.
    pub fn table_of_channel(&self, channel: &str) -> Option<String> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        Some(rest.strip_suffix("}:presence")?.to_owned())
    }

    /// The table id of an events stream key, if it is one of ours.
    pub fn table_of_events(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let table = rest.strip_suffix("}:events")?;
        Some(table.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_share_the_hash_tag() {
        let k = Keys::new("rts");
        assert_eq!(k.events("t1"), "rts:{t1}:events");
        assert_eq!(k.record("t1", "r1"), "rts:{t1}:rec:r1");
        assert_eq!(k.versions("t1"), "rts:{t1}:ver");
        assert_eq!(k.dedup("t1", "u:1", "c"), "rts:{t1}:cc:3:u:1:c");
        assert_eq!(k.base_events("b"), "rts:{b}:base-events");
        assert_eq!(k.table_of_events("rts:{t1}:events").as_deref(), Some("t1"));
        assert_eq!(k.table_of_events("other:{t1}:events"), None);
    }
}
