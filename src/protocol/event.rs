//! A [`ChangeEvent`] on the wire: encoded at most once per wire encoding
//! (the event itself, and its decoding from a stream entry, are
//! [`crate::change::event`]). Frames carrying events
//! (`record_change`, `batch_changes`, `missed_events`, ...) are assembled by
//! concatenating those cached bytes, so a batch with the origin's own events
//! filtered out costs no re-encoding, and every subscriber shares the bytes.

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::change::event::{ChangeEvent, EntryError};

use super::Encoding;

impl ChangeEvent {
    /// The event's own bytes in `encoding`, encoded on first use.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        self.encoded[encoding.index()].get_or_init(|| {
            let bytes = match encoding {
                Encoding::MsgPack => rmp_serde::to_vec_named(self).map_err(|e| e.to_string()),
                Encoding::Json => serde_json::to_vec(self).map_err(|e| e.to_string()),
            };
            // Values came from JSON or MessagePack and re-encode; on the
            // impossible failure send `null` rather than panicking.
            Bytes::from(bytes.unwrap_or_else(|e| {
                tracing::error!(error = %e, id = %self.id, "failed to encode a change event");
                match encoding {
                    Encoding::MsgPack => vec![0xc0],
                    Encoding::Json => b"null".to_vec(),
                }
            }))
        })
    }
}

/// Most bytes (MessagePack) of events in one frame of several events.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Most events in one frame.
const MAX_BATCH_EVENTS: usize = 256;

/// Splits events into consecutive groups that each make a bounded frame
/// (`batch_changes`, `missed_events`): at most 256 events and 256 KiB of
/// encoded events, or one event however large.
pub fn bounded_groups(events: &[ChangeEvent]) -> Vec<&[ChangeEvent]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let size = e.encoded(Encoding::MsgPack).len();
        if i > start && (bytes + size > MAX_BATCH_BYTES || i - start >= MAX_BATCH_EVENTS) {
            groups.push(&events[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < events.len() {
        groups.push(&events[start..]);
    }
    groups
}

/// `[name, event]`: a `record_change` frame.
pub fn single_frame(name: &str, event: &ChangeEvent, encoding: Encoding) -> Bytes {
    let body = event.encoded(encoding);
    let mut out = BytesMut::with_capacity(body.len() + name.len() + 8);
    match encoding {
        Encoding::MsgPack => {
            out.put_u8(0x92);
            write_msgpack_str(&mut out, name);
            out.extend_from_slice(body);
        }
        Encoding::Json => {
            out.put_u8(b'[');
            write_json_str(&mut out, name);
            out.put_u8(b',');
            out.extend_from_slice(body);
            out.put_u8(b']');
        }
    }
    out.freeze()
}

/// `[name, [event, ...]]`: `batch_changes`, `recent_changes`, `missed_events`.
pub fn list_frame<'a, I>(name: &str, events: I, encoding: Encoding) -> Bytes
where
    I: IntoIterator<Item = &'a ChangeEvent>,
    I::IntoIter: ExactSizeIterator,
{
    let events = events.into_iter();
    let count = events.len();
    let mut out = BytesMut::with_capacity(64 + count * 256);
    match encoding {
        Encoding::MsgPack => {
            out.put_u8(0x92);
            write_msgpack_str(&mut out, name);
            let mut w = (&mut out).writer();
            // Writing into a BytesMut cannot fail.
            let _ = rmp::encode::write_array_len(&mut w, count as u32);
            for e in events {
                out.extend_from_slice(e.encoded(encoding));
            }
        }
        Encoding::Json => {
            out.put_u8(b'[');
            write_json_str(&mut out, name);
            out.extend_from_slice(b",[");
            for (i, e) in events.enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                out.extend_from_slice(e.encoded(encoding));
            }
            out.extend_from_slice(b"]]");
        }
    }
    out.freeze()
}

fn write_msgpack_str(out: &mut BytesMut, s: &str) {
    let mut w = out.writer();
    let _ = rmp::encode::write_str(&mut w, s);
}

fn write_json_str(out: &mut BytesMut, s: &str) {
    let _ = serde_json::to_writer(out.writer(), s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::event::fixtures::{entry, id};
    use serde_json::Value;

    #[test]
    fn list_frame_concatenates_cached_event_bytes() {
        let f = entry(&[
            ("type", b"delete"),
            ("entityType", b"record"),
            ("entityId", b"r1"),
            ("userId", b"u1"),
        ]);
        let a = ChangeEvent::from_entry(id("1-0"), &f, Some("t")).unwrap();
        let b = ChangeEvent::from_entry(id("2-0"), &f, Some("t")).unwrap();
        let json_frame = list_frame("batch_changes", [&a, &b], Encoding::Json);
        let v: Value = serde_json::from_slice(&json_frame).unwrap();
        assert_eq!(v[0], "batch_changes");
        assert_eq!(v[1][1]["id"], "2-0");
        let mp = list_frame("batch_changes", [&a, &b], Encoding::MsgPack);
        let v: Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(v[1][0]["entityId"], "r1");
        let single = single_frame("record_change", &a, Encoding::MsgPack);
        let v: Value = rmp_serde::from_slice(&single).unwrap();
        assert_eq!(v[1]["type"], "delete");
    }
}
