//! Id rules shared by the protocol and the Redis key layout: 1..=128 bytes,
//! no ASCII control characters, no `{`/`}` (they would break the Redis
//! Cluster hash tag that keeps a table's keys in one slot).

/// Longest id in bytes.
pub const MAX_ID_BYTES: usize = 128;

pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id
            .chars()
            .any(|c| c.is_ascii_control() || c == '{' || c == '}')
}

/// Returns the id or a `bad_request` naming the field.
pub fn check_id<'a>(field: &str, id: &'a str) -> Result<&'a str, super::RequestError> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(super::RequestError::bad_request(format!(
            "{field} must be 1..={MAX_ID_BYTES} bytes without control characters, '{{' or '}}'"
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
}
