//! Values inside a change (field values, metadata) as they are decoded
//! from MessagePack (a client frame, a stream field written by a v1
//! producer), and measured. One rule for both places: numbers are finite,
//! nesting is bounded.

use serde_json::Value;

/// Deepest nesting accepted in a MessagePack value (JSON's parser stops
/// at 128 too), so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Decodes MessagePack into a JSON value, with the depth limit. Bounded
/// allocation: declared lengths are not trusted beyond the bytes present.
/// NaN and ±Infinity are refused rather than turned into `null`: a JSON
/// subscriber could not be sent them, and a `version` of NaN must not read
/// as "no version".
pub fn msgpack_value(bytes: &[u8]) -> Result<Value, rmp_serde::decode::Error> {
    use serde::Deserialize;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    FiniteValue::deserialize(&mut de).map(|v| v.0)
}

/// A JSON value whose numbers are all finite.
struct FiniteValue(Value);

impl<'de> serde::Deserialize<'de> for FiniteValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FiniteVisitor).map(FiniteValue)
    }
}

struct FiniteVisitor;

impl<'de> serde::de::Visitor<'de> for FiniteVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value with finite numbers")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("NaN and Infinity are not allowed"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    /// A MessagePack extension (rmp-serde hands it over as a newtype of
    /// its type and bytes). Only JavaScript's `undefined` as notepack (the
    /// encoder of `socket.io-msgpack-parser`) writes it, extension 0 with
    /// zero bytes, is taken: as null. Any other extension is refused.
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if d.deserialize_any(ExtVisitor)? {
            Ok(Value::Null)
        } else {
            Err(serde::de::Error::custom(
                "MessagePack extension types are not supported",
            ))
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The size hint is the peer's claim: cap what is reserved up front.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(FiniteValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some((k, FiniteValue(v))) = map.next_entry::<String, FiniteValue>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Reads an extension's type and bytes: whether it is notepack's
/// `undefined` (type 0, all bytes zero).
struct ExtVisitor;

impl<'de> serde::de::Visitor<'de> for ExtVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a MessagePack extension")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let kind: Option<i8> = seq.next_element()?;
        let zero: Option<ExtZero> = seq.next_element()?;
        Ok(kind == Some(0) && zero.is_some_and(|z| z.0))
    }
}

/// Whether an extension's bytes are all zero.
struct ExtZero(bool);

impl<'de> serde::Deserialize<'de> for ExtZero {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Zero;
        impl serde::de::Visitor<'_> for Zero {
            type Value = ExtZero;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an extension's bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ExtZero, E> {
                Ok(ExtZero(v.iter().all(|b| *b == 0)))
            }
        }
        d.deserialize_bytes(Zero)
    }
}

/// A stream field (`changes`, `metadata`) as JSON text or MessagePack.
pub fn json_or_msgpack(raw: &[u8]) -> Option<Value> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace())?;
    if matches!(first, b'[' | b'{') {
        serde_json::from_slice(raw).ok()
    } else {
        msgpack_value(raw).ok()
    }
}

/// A writer that only counts: the size of an encoding without building it.
pub struct ByteCount(pub usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of a value's JSON text (what a record state stores), counted
/// without building it.
pub fn json_len(value: &Value) -> usize {
    let mut count = ByteCount(0);
    // Writing a JSON value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Bytes of a value as MessagePack, counted without building it.
pub fn msgpack_len(value: &Option<Value>) -> usize {
    let mut count = ByteCount(0);
    if let Some(v) = value {
        // Writing into a counter cannot fail; a value that came from JSON
        // or MessagePack always encodes.
        let _ = rmp_serde::encode::write_named(&mut count, v);
    }
    count.0
}

#[cfg(test)]
mod tests {
    use super::msgpack_len;
    use serde_json::json;

    /// The bound a change's validation relies on to skip counting
    /// MessagePack.
    #[test]
    fn messagepack_is_at_most_three_times_the_json() {
        for v in [
            json!([1.0, 2.0, 3.5, 0.0, -0.0, 1e300]),
            json!([0, 1, 127, 128, -1, -33, 65536, u64::MAX, i64::MIN]),
            json!([[], {}, "", "x", null, true, false]),
            json!({"a": [{"b": [1.0]}], "": {}}),
            json!("\u{1}\u{2}é"),
        ] {
            let json_len = serde_json::to_vec(&v).unwrap().len();
            assert!(msgpack_len(&Some(v.clone())) <= 3 * json_len, "{v}");
        }
    }
}
