//! Redis stream entry ids (`"<ms>-<seq>"`), parsed once and compared as
//! numbers: `"10-0"` is after `"9-0"`, which string order gets wrong. An id
//! is parsed once, where it enters (a stream reply, a client's
//! `lastEventId`), and travels as this type to the hub, the session and the
//! wire, where it is written back as text.

use std::fmt;

/// A stream entry id; orders as Redis orders entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Unix milliseconds of the entry (the event's timestamp).
    pub ms: u64,
    /// The entry's number within its millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The id before any real entry.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// `None` unless `id` is exactly `<digits>-<digits>` within u64.
    pub fn parse(id: &str) -> Option<StreamId> {
        let (ms, seq) = id.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// For ids that came from Redis itself: anything unparsable sorts first.
    pub fn parse_or_zero(id: &str) -> StreamId {
        StreamId::parse(id).unwrap_or(StreamId::ZERO)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// On the wire an id is its text, `"<ms>-<seq>"`.
impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StreamId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid stream id {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_as_numbers_not_strings() {
        let a = StreamId::parse("9-5").unwrap();
        let b = StreamId::parse("10-0").unwrap();
        assert!(a < b);
        assert!(StreamId::parse("10-1").unwrap() > b);
        assert_eq!(b.to_string(), "10-0");
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        for bad in [
            "",
            "1",
            "-1",
            "1-",
            "a-1",
            "1-b",
            "+1-0",
            "1-0-0",
            "99999999999999999999-0",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
        assert_eq!(StreamId::parse_or_zero("junk"), StreamId::ZERO);
    }
}
