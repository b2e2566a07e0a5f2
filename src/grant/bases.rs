//! Which bases' events an identity may read (docs/protocol.md 2.2 and 3.2):
//! a token's `bases` claim, `{"<baseId>" | "*": "r" | "rw"}`, parsed once.
//!
//! A base's events otherwise reach a connection only through a table the
//! server holds in that base (`store::bases`); naming a base in a request
//! grants nothing. A base grant also lets a write bind an unbound table to
//! that base.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Access, GrantError};
use crate::change::ids::is_valid_id;

/// Most bases one token may name.
const MAX_BASES: usize = 10_000;

/// Base grants of one identity.
#[derive(Clone, Debug, Default)]
pub struct BaseGrants(HashMap<String, Access>);

impl BaseGrants {
    /// Every base (development mode's seed form).
    pub fn all() -> BaseGrants {
        BaseGrants(HashMap::from([("*".to_owned(), Access::ReadWrite)]))
    }

    /// Parses a `bases` claim; anything but `"r"`/`"rw"` under a base id
    /// (or `"*"`) is refused, naming the key.
    pub fn from_claim(claim: &Map<String, Value>) -> Result<BaseGrants, GrantError> {
        if claim.len() > MAX_BASES {
            return Err(GrantError(format!(
                "bases: at most {MAX_BASES} bases per token"
            )));
        }
        let mut grants = HashMap::with_capacity(claim.len());
        for (base, value) in claim {
            if base != "*" && !is_valid_id(base) {
                return Err(GrantError(
                    "bases: a key is neither a base id nor \"*\"".to_owned(),
                ));
            }
            let access = match value.as_str() {
                Some("r") => Access::Read,
                Some("rw") => Access::ReadWrite,
                _ => {
                    return Err(GrantError(
                        "bases: each grant must be \"r\" or \"rw\"".to_owned(),
                    ))
                }
            };
            grants.insert(base.clone(), access);
        }
        Ok(BaseGrants(grants))
    }

    /// Whether the identity may read `base`'s events.
    pub fn can_read(&self, base: &str) -> bool {
        self.0.contains_key(base) || self.0.contains_key("*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<BaseGrants, GrantError> {
        match v {
            Value::Object(m) => BaseGrants::from_claim(&m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_named_base_or_the_wildcard_is_readable_and_nothing_else() {
        let g = parse(json!({"b1": "r"})).unwrap_or_default();
        assert!(g.can_read("b1"));
        assert!(!g.can_read("b2"));
        let all = parse(json!({"*": "rw"})).unwrap_or_default();
        assert!(all.can_read("anything"));
        assert!(!BaseGrants::default().can_read("b1"));
    }

    #[test]
    fn a_bad_grant_or_key_is_refused() {
        assert!(parse(json!({"b1": "w"})).is_err());
        assert!(parse(json!({"b1": 1})).is_err());
        assert!(parse(json!({"{b}": "r"})).is_err());
    }
}
