//! The commit doorbell's text, as `rtsync_commit` publishes it on a table's
//! channel (lua/commit.lua `append`): a bare `{"event":"ring"}` (read
//! the stream), or, for an entry whose fields add up to at most 4 KiB, the
//! entry itself with the id of the stream's entry before it:
//! `{"event":"ring","id":..,"prev":..,"fields":[name, value, ..]}`.
//!
//! Data flow: the presence bus hands each payload here; an entry ring goes
//! to the tailer ([`super::tailer::TailerHandle::ring_entry`]), which
//! delivers it without reading the stream when the table's last delivered
//! event is `prev` (nothing can be missing in between), and reads the
//! stream as for a bare ring otherwise. Anything that does not parse as an
//! entry ring is a bare ring: the stream stays the source of truth.

use serde::Deserialize;

use crate::change::StreamId;

/// A stream entry's fields, in order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// A stream entry: its id and its fields.
pub type Entry = (StreamId, Fields);

/// What `rtsync_commit` publishes without the entry.
pub const BARE: &[u8] = br#"{"event":"ring"}"#;

/// An entry carried by the doorbell, and the id of the entry before it.
#[derive(Debug, PartialEq, Eq)]
pub struct EntryRing {
    pub prev: StreamId,
    pub entry: Entry,
}

#[derive(Deserialize)]
struct Text {
    event: String,
    id: StreamId,
    prev: StreamId,
    fields: Vec<String>,
}

/// Whether `payload` may be an entry ring: a cheap look before the parse,
/// so presence notices (cursor moves) are not parsed twice.
pub fn may_carry_entry(payload: &[u8]) -> bool {
    payload.windows(7).any(|w| w == br#""prev":"#)
}

/// The entry of an entry ring; `None` for anything else (a bare ring, a
/// presence notice, a malformed text, an odd number of field items).
pub fn entry(payload: &[u8]) -> Option<EntryRing> {
    let text: Text = serde_json::from_slice(payload).ok()?;
    if text.event != "ring" || !text.fields.len().is_multiple_of(2) {
        return None;
    }
    let mut fields: Fields = Vec::with_capacity(text.fields.len() / 2);
    let mut items = text.fields.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.push((name, value.into_bytes()));
    }
    Some(EntryRing {
        prev: text.prev,
        entry: (text.id, fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn an_entry_ring_gives_the_entry_and_the_id_before_it() {
        let text = br#"{"fields":["type","update","entityId","r1"],"prev":"5-1","id":"7-0","event":"ring"}"#;
        assert!(may_carry_entry(text));
        let ring = entry(text).unwrap();
        assert_eq!(ring.prev, id(5, 1));
        assert_eq!(ring.entry.0, id(7, 0));
        assert_eq!(
            ring.entry.1,
            vec![
                ("type".to_owned(), b"update".to_vec()),
                ("entityId".to_owned(), b"r1".to_vec())
            ]
        );
    }

    #[test]
    fn a_bare_ring_or_a_presence_notice_is_no_entry_ring() {
        assert!(!may_carry_entry(BARE));
        assert_eq!(entry(BARE), None);
        assert_eq!(
            entry(br#"{"event":"cursor_moved","data":{"prev":1}}"#),
            None
        );
    }

    #[test]
    fn a_presence_notice_whose_client_data_looks_like_a_ring_is_no_entry_ring() {
        // lua/presence.lua publishes {event, data, origin}: a client picks
        // only what is inside `data` (and `origin`), never the top level.
        let text = br#"{"event":"cursor_position","origin":"c1","data":{"event":"ring","id":"9-0","prev":"0-0","fields":["type","delete","entityType","record","entityId","r1","userId","u"]}}"#;
        assert!(may_carry_entry(text));
        assert_eq!(entry(text), None);
        let origin = br#"{"event":"viewport","data":{},"origin":"\",\"event\":\"ring\",\"id\":\"9-0\",\"prev\":\"0-0\",\"fields\":[]}"#;
        assert_eq!(entry(origin), None);
    }

    #[test]
    fn a_malformed_entry_ring_is_no_entry_ring() {
        for text in [
            &br#"{"event":"ring","id":"7-0","prev":"5-1","fields":["type"]}"#[..],
            br#"{"event":"ring","id":"7","prev":"5-1","fields":[]}"#,
            br#"{"event":"ring","id":"7-0","prev":"5-1","fields":["n",1]}"#,
            br#"{"event":"cursor","id":"7-0","prev":"5-1","fields":[]}"#,
            br#"{"event":"ring","id":"7-0","prev":"5-1","fields":["#,
        ] {
            assert_eq!(entry(text), None, "{}", String::from_utf8_lossy(text));
        }
    }
}
