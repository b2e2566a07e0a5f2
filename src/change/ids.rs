//! Id rules shared by the protocol and the Redis key layout: 1..=128 bytes,
//! no control or format characters (Unicode categories Cc and Cf: bidi
//! overrides and zero-width characters would let one id pose as another),
//! no `{`/`}` (they would break the Redis Cluster hash tag that keeps a
//! table's keys in one slot). `lua/rtsync.lua` checks the same list, and `tests/change_rules.rs` holds
//! both to one table of inputs.

use super::ChangeError;

/// Longest id in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Unicode's format characters (category Cf), as inclusive ranges.
const FORMAT_CHARS: [(char, char); 21] = [
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn forbidden(c: char) -> bool {
    c.is_control()
        || c == '{'
        || c == '}'
        || FORMAT_CHARS.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The name a base's event stream goes by where table streams are named by
/// their table id (the hub, the tailer, consumer groups, the sink): `{B}`.
/// Ids never hold braces, so no table id is ever taken for a base.
pub fn base_stream_name(base: &str) -> String {
    format!("{{{base}}}")
}

/// The base id of a stream name made by [`base_stream_name`]; `None` for a
/// table's.
pub fn base_of_stream(name: &str) -> Option<&str> {
    name.strip_prefix('{')?.strip_suffix('}')
}

/// Whether `id` may name a table, record, field, user or connection.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(forbidden)
}

/// Returns the id, or an error naming the field.
pub fn check_id<'a>(field: &str, id: &'a str) -> Result<&'a str, ChangeError> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(ChangeError::Invalid(format!(
            "{field} must be 1..={MAX_ID_BYTES} bytes without control or format characters, '{{' or '}}'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_unicode_ids() {
        assert!(is_valid_id("tbl_1"));
        assert!(is_valid_id("tâble-ünïcode"));
        assert!(is_valid_id(&"x".repeat(128)));
    }

    #[test]
    fn rejects_empty_long_braces_and_controls() {
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(!is_valid_id("a{b"));
        assert!(!is_valid_id("a}b"));
        assert!(!is_valid_id("a\nb"));
        assert!(!is_valid_id("a\u{7f}b"));
    }

    #[test]
    fn rejects_unicode_controls_bidi_overrides_and_zero_width() {
        for c in [
            '\u{85}',
            '\u{9f}',
            '\u{202e}',
            '\u{200b}',
            '\u{200d}',
            '\u{2066}',
            '\u{feff}',
            '\u{ad}',
            '\u{e0041}',
        ] {
            assert!(!is_valid_id(&format!("a{c}b")), "{c:?}");
        }
        assert!(is_valid_id("a\u{2010}b"), "a hyphen is fine");
    }
}
