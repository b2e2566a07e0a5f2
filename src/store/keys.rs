//! The Redis key layout (docs/protocol.md section 7). Every key of a table carries
//! `{tableId}` as its Redis Cluster hash tag, so one table lives in one slot.
//! Ids are validated before they get here (no `{`/`}`), so the tag is sound.
//!
//! A base's stream (`<p>:{B}:base-events`, docs/protocol.md 3.2) is served like a
//! table's under the stream name `{B}` ([`base_stream_name`]); the keys of a
//! stream name (events, doorbell channel, the sink's dead letters, lease and
//! floor) map it to `<p>:{B}:base-<kind>`, in the base's own slot.
//!
//! Every `FCALL` of the function library (`lua/`) names every key it touches
//! in KEYS, in the order its full form documents; the `*_keys` functions
//! below build those lists, one per Redis function, so this file is the one
//! place that knows the layout (the Lua functions derive no key names).

use crate::change::ids::{base_of_stream, base_stream_name};

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

    /// A key of the stream named `name` (a table id, or a base's `{B}`).
    fn stream_key(&self, name: &str, kind: &str) -> String {
        match base_of_stream(name) {
            Some(base) => self.tagged(base, &[":base-", kind]),
            None => self.tagged(name, &[":", kind]),
        }
    }

    /// `<prefix>:{tag}` followed by `rest`, in one allocation: the keys of
    /// every commit are built with it (`format!` costs several times as
    /// much per key, and a commit names eight).
    fn tagged(&self, tag: &str, rest: &[&str]) -> String {
        let len = self.prefix.len() + tag.len() + 3 + rest.iter().map(|r| r.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push_str(tag);
        key.push('}');
        for r in rest {
            key.push_str(r);
        }
        key
    }

    /// The stream of `name`: a table's events, or (for `{B}`) the base's.
    pub fn events(&self, name: &str) -> String {
        self.stream_key(name, "events")
    }

    pub fn base_events(&self, base: &str) -> String {
        format!("{}:{{{base}}}:base-events", self.prefix)
    }

    pub fn record(&self, table: &str, record: &str) -> String {
        self.tagged(table, &[":rec:", record])
    }

    /// A record's history index (v1.3): a list of the stream ids of its
    /// changes, newest first, kept by `rtsync_commit` in the table's slot.
    pub fn record_history(&self, table: &str, record: &str) -> String {
        self.tagged(table, &[":rh:", record])
    }

    /// The table's record index (sorted set of record ids, score 0).
    pub fn records(&self, table: &str) -> String {
        format!("{}:{{{table}}}:records", self.prefix)
    }

    /// The base the server holds for a table (a string: the base id;
    /// docs/protocol.md 3.2), in the table's slot.
    pub fn table_base(&self, table: &str) -> String {
        format!("{}:{{{table}}}:base", self.prefix)
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

    /// A user's undo stack on a table (a list, newest step first;
    /// `lua/steps.lua`), in the table's slot; the user id's length keeps
    /// the key unambiguous, as in [`Keys::dedup`].
    pub fn undo_stack(&self, table: &str, user: &str) -> String {
        self.tagged(table, &[":undo:", &user.len().to_string(), ":", user])
    }

    /// A user's redo stack on a table (see [`Keys::undo_stack`]).
    pub fn redo_stack(&self, table: &str, user: &str) -> String {
        self.tagged(table, &[":redo:", &user.len().to_string(), ":", user])
    }

    /// The sink's dead-letter stream of a table (docs/protocol.md section 9).
    pub fn dead(&self, name: &str) -> String {
        self.stream_key(name, "dead")
    }

    /// Which sink process owns a table's delivery (`rtsync_sink_lease`).
    pub fn sink_lease(&self, name: &str) -> String {
        self.stream_key(name, "sink-lease")
    }

    /// The time (ms) below which the table's stream may be trimmed: the
    /// oldest entry the sink has not acknowledged (kept by `rtsync sink`).
    pub fn sink_floor(&self, name: &str) -> String {
        self.stream_key(name, "sink-floor")
    }

    /// Live sink processes: a sorted set of instance id -> last seen (ms).
    pub fn sinks(&self) -> String {
        format!("{}:sinks", self.prefix)
    }

    /// The patterns of every table stream and every base stream, for SCAN.
    pub fn events_patterns(&self) -> [String; 2] {
        [
            format!("{}:{{*}}:events", self.prefix),
            format!("{}:{{*}}:base-events", self.prefix),
        ]
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
    /// as the presence hash; channels and keys are separate namespaces),
    /// also its doorbell; a base's stream rings on `<p>:{B}:base-presence`.
    pub fn presence_channel(&self, name: &str) -> String {
        self.stream_key(name, "presence")
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

    /// The deployment's audit stream (docs/protocol.md 12): one key, no
    /// hash tag (in a cluster it lives on one node).
    pub fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    /// The hash of the audit chain's last entry. Its hash tag is the
    /// stream's whole name, so it shares the stream's slot.
    pub fn audit_head(&self) -> String {
        format!("{{{}:audit}}:head", self.prefix)
    }

    /// The sink's dead letters of the audit stream (its slot).
    pub fn audit_dead(&self) -> String {
        format!("{{{}:audit}}:dead", self.prefix)
    }

    /// KEYS of `rtsync_sink_lease` for the audit stream's delivery.
    pub fn audit_lease_keys(&self) -> [String; 1] {
        [format!("{{{}:audit}}:sink-lease", self.prefix)]
    }

    /// KEYS of `rtsync_audit` (`lua/audit.lua`): the stream, its head.
    pub fn audit_keys(&self) -> [String; 2] {
        [self.audit(), self.audit_head()]
    }

    /// KEYS of `rtsync_commit` (full form, `lua/commit.lua`): stream,
    /// state, record index, sink floor, doorbell channel, (a record's)
    /// history index[, dedup]. A
    /// change to a base (`entity_type` "base") goes to the base's stream
    /// `{B}`; a record's state is its hash, any other entity's the scope's
    /// versions. `dedup` is the change's user and clientChangeId.
    pub fn commit_keys(
        &self,
        scope: &str,
        entity_type: &str,
        entity_id: &str,
        dedup: Option<(&str, &str)>,
    ) -> Vec<String> {
        let stream = if entity_type == "base" {
            base_stream_name(scope)
        } else {
            scope.to_owned()
        };
        let state = if entity_type == "record" {
            self.record(scope, entity_id)
        } else {
            self.versions(scope)
        };
        let mut keys = vec![
            self.events(&stream),
            state,
            self.stream_key(&stream, "records"),
            self.sink_floor(&stream),
            self.presence_channel(&stream),
        ];
        // A record's history index (v1.3): the form whose header carries
        // `recordHistory` (`store::commit`).
        if entity_type == "record" {
            keys.push(self.record_history(scope, entity_id));
        }
        if let Some((user, client_change_id)) = dedup {
            keys.push(self.dedup(scope, user, client_change_id));
        }
        keys
    }

    /// The keys a commit appends to [`Keys::commit_keys`] to record an undo
    /// step for its user (`lua/commit.lua`, KEYS 7 and 8): the undo stack,
    /// then the redo stack.
    pub fn commit_undo_keys(&self, table: &str, user: &str) -> [String; 2] {
        [self.undo_stack(table, user), self.redo_stack(table, user)]
    }

    /// KEYS of `rtsync_undo` (`lua/undo.lua`): the stack the step is taken
    /// from and the other one (`redo` swaps them), the table's stream,
    /// record index, sink floor and doorbell, each record of the step in
    /// order (its hash, then its history index), then the dedup key of the
    /// request's clientChangeId.
    pub fn undo_keys(
        &self,
        table: &str,
        user: &str,
        redo: bool,
        record_ids: &[String],
        client_change_id: Option<&str>,
    ) -> Vec<String> {
        let [undo, redo_stack] = self.commit_undo_keys(table, user);
        let (from, to) = if redo {
            (redo_stack, undo)
        } else {
            (undo, redo_stack)
        };
        let mut keys = Vec::with_capacity(7 + 2 * record_ids.len());
        keys.extend([
            from,
            to,
            self.events(table),
            self.records(table),
            self.sink_floor(table),
            self.presence_channel(table),
        ]);
        for id in record_ids {
            keys.push(self.record(table, id));
            keys.push(self.record_history(table, id));
        }
        if let Some(cc) = client_change_id {
            keys.push(self.dedup(table, user, cc));
        }
        keys
    }

    /// KEYS of `rtsync_load` (`lua/records.lua`): the table's stream, its
    /// record index, then the hash of each record read, in order (for a
    /// page, the ids the index lists after its `after`).
    pub fn load_keys(&self, table: &str, record_ids: &[String]) -> Vec<String> {
        self.records_call(table, record_ids)
    }

    /// KEYS of `rtsync_seed`: as [`Keys::load_keys`], one record hash per
    /// seeded record, in order.
    pub fn seed_keys(&self, table: &str, record_ids: &[&str]) -> Vec<String> {
        self.records_call(table, record_ids)
    }

    fn records_call<S: AsRef<str>>(&self, table: &str, record_ids: &[S]) -> Vec<String> {
        let mut keys = Vec::with_capacity(2 + record_ids.len());
        keys.push(self.events(table));
        keys.push(self.records(table));
        keys.extend(record_ids.iter().map(|id| self.record(table, id.as_ref())));
        keys
    }

    /// A view's filter (v1.3, docs/protocol.md 3.5): a string holding the
    /// filter's JSON, in the table's slot; absent when the view has none.
    pub fn view(&self, table: &str, view: &str) -> String {
        format!("{}:{{{table}}}:view:{view}", self.prefix)
    }

    /// KEYS of `rtsync_view_set` (`lua/views.lua`): the stream, the view's
    /// key, the table's versions, sink floor and doorbell.
    pub fn view_set_keys(&self, table: &str, view: &str) -> [String; 5] {
        [
            self.events(table),
            self.view(table, view),
            self.versions(table),
            self.sink_floor(table),
            self.presence_channel(table),
        ]
    }

    /// KEYS of `rtsync_view_get` (`lua/views.lua`): the view's key and the
    /// table's versions.
    pub fn view_get_keys(&self, table: &str, view: &str) -> [String; 2] {
        [self.view(table, view), self.versions(table)]
    }

    /// KEYS of `rtsync_history` (`lua/history.lua`): the stream.
    pub fn history_keys(&self, name: &str) -> [String; 1] {
        [self.events(name)]
    }

    /// KEYS of `rtsync_record_history` (`lua/record_history.lua`): the
    /// table's stream and the record's history index.
    pub fn record_history_keys(&self, table: &str, record: &str) -> [String; 2] {
        [self.events(table), self.record_history(table, record)]
    }

    /// KEYS of `rtsync_stream_release` (`lua/streams.lua`): the stream.
    pub fn release_keys(&self, name: &str) -> [String; 1] {
        [self.events(name)]
    }

    /// KEYS of every `rtsync_presence_*` function (`lua/presence.lua`):
    /// presence, seen, colors. (The notices' channel is an argument.)
    pub fn presence_keys(&self, table: &str) -> [String; 3] {
        [self.presence(table), self.seen(table), self.colors(table)]
    }

    /// KEYS of `rtsync_sink_lease` (`lua/sink.lua`): the lease.
    pub fn lease_keys(&self, name: &str) -> [String; 1] {
        [self.sink_lease(name)]
    }

    /// The stream name of a key `<p>:{X}:<kind>` or `<p>:{X}:base-<kind>`.
    fn name_of(&self, key: &str, kind: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(":{")?;
        let (scope, tail) = rest.split_once('}')?;
        let tail = tail.strip_prefix(':')?;
        if tail == kind {
            Some(scope.to_owned())
        } else if tail.strip_prefix("base-") == Some(kind) {
            Some(base_stream_name(scope))
        } else {
            None
        }
    }

    /// The stream name (table id, or `{B}`) of a presence channel.
    pub fn table_of_channel(&self, channel: &str) -> Option<String> {
        self.name_of(channel, "presence")
    }

    /// The stream name (table id, or `{B}`) of an events stream key, if it
    /// is one of ours.
    pub fn table_of_events(&self, key: &str) -> Option<String> {
        self.name_of(key, "events")
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
        assert_eq!(k.table_base("t"), "rts:{t}:base");
        assert_eq!(k.table_of_events("rts:{t1}:events").as_deref(), Some("t1"));
        assert_eq!(k.table_of_events("other:{t1}:events"), None);
    }

    #[test]
    fn the_audit_head_hashes_to_the_audit_streams_slot() {
        let k = Keys::new("rts");
        assert_eq!(k.audit_keys(), ["rts:audit", "{rts:audit}:head"]);
    }

    #[test]
    fn a_base_stream_is_named_by_its_id_in_braces_and_keeps_its_slot() {
        let k = Keys::new("rts");
        let name = base_stream_name("b1");
        assert_eq!(k.events(&name), "rts:{b1}:base-events");
        assert_eq!(k.events(&name), k.base_events("b1"));
        assert_eq!(k.presence_channel(&name), "rts:{b1}:base-presence");
        assert_eq!(k.dead(&name), "rts:{b1}:base-dead");
        assert_eq!(k.sink_floor(&name), "rts:{b1}:base-sink-floor");
        assert_eq!(
            k.table_of_events("rts:{b1}:base-events"),
            Some(name.clone())
        );
        assert_eq!(k.table_of_channel("rts:{b1}:base-presence"), Some(name));
        assert_eq!(k.table_of_channel("rts:{t}:presence").as_deref(), Some("t"));
        assert_eq!(k.table_of_events("rts:{t}:records"), None);
    }

    #[test]
    fn a_commit_names_every_key_it_touches_in_the_full_form_order() {
        let k = Keys::new("rts");
        assert_eq!(
            k.commit_keys("t", "record", "r", Some(("u:1", "c"))),
            [
                "rts:{t}:events",
                "rts:{t}:rec:r",
                "rts:{t}:records",
                "rts:{t}:sink-floor",
                "rts:{t}:presence",
                "rts:{t}:rh:r",
                "rts:{t}:cc:3:u:1:c",
            ]
        );
        assert_eq!(
            k.commit_keys("b", "base", "b", None),
            [
                "rts:{b}:base-events",
                "rts:{b}:ver",
                "rts:{b}:base-records",
                "rts:{b}:base-sink-floor",
                "rts:{b}:base-presence",
            ]
        );
    }

    #[test]
    fn an_undo_names_both_stacks_the_table_and_each_record_of_the_step_in_its_slot() {
        let k = Keys::new("rts");
        let keys = k.undo_keys("t", "u:1", true, &["r1".to_owned()], Some("cc"));
        assert_eq!(
            keys,
            [
                "rts:{t}:redo:3:u:1",
                "rts:{t}:undo:3:u:1",
                "rts:{t}:events",
                "rts:{t}:records",
                "rts:{t}:sink-floor",
                "rts:{t}:presence",
                "rts:{t}:rec:r1",
                "rts:{t}:rh:r1",
                "rts:{t}:cc:3:u:1:cc",
            ]
        );
    }

    #[test]
    fn a_views_calls_name_the_view_key_in_the_tables_slot() {
        let k = Keys::new("rts");
        assert_eq!(
            k.view_set_keys("t", "v"),
            [
                "rts:{t}:events",
                "rts:{t}:view:v",
                "rts:{t}:ver",
                "rts:{t}:sink-floor",
                "rts:{t}:presence",
            ]
        );
        assert_eq!(k.view_get_keys("t", "v"), ["rts:{t}:view:v", "rts:{t}:ver"]);
    }

    #[test]
    fn a_records_call_names_each_record_hash_after_the_stream_and_index() {
        let k = Keys::new("rts");
        assert_eq!(
            k.seed_keys("t", &["a", "b"]),
            [
                "rts:{t}:events",
                "rts:{t}:records",
                "rts:{t}:rec:a",
                "rts:{t}:rec:b"
            ]
        );
        assert_eq!(k.load_keys("t", &[]), ["rts:{t}:events", "rts:{t}:records"]);
    }
}
