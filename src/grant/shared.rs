//! Parsed grants shared between equal claims: many users carry the same
//! `tables` claim (a role's grant), so each distinct claim is parsed once
//! and every identity with it holds the same [`Grants`] (one `Arc`), not a
//! copy of its own.
//!
//! Data flow: authentication hands the claim to [`GrantCache::parse`],
//! which looks it up by its JSON text; a miss parses it
//! ([`Grants::from_claim`]) and keeps the result. The cache is bounded:
//! only claims up to [`MAX_KEY_BYTES`] are kept, and at [`MAX_ENTRIES`] it
//! starts over (a flood of distinct claims costs parsing, never memory).
//! A claim names no user (`$user` in a row filter is bound when it is
//! evaluated), so sharing never mixes two users' grants.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::{GrantError, Grants};
use crate::locks::lock;

/// Most distinct claims kept.
const MAX_ENTRIES: usize = 1024;
/// Longest claim (as JSON) kept; longer ones are parsed for their user alone.
const MAX_KEY_BYTES: usize = 2048;

/// Grants parsed from claims, by the claim's JSON text.
#[derive(Default)]
pub struct GrantCache {
    parsed: Mutex<HashMap<String, Grants>>,
}

impl GrantCache {
    /// The grants of `claim`: the ones already parsed from an equal claim,
    /// else parsed now (and kept, within the bounds). A malformed claim is
    /// refused as [`Grants::from_claim`] refuses it, and never kept.
    pub fn parse(&self, claim: &Map<String, Value>) -> Result<Grants, GrantError> {
        let key = serde_json::to_string(claim)
            .ok()
            .filter(|k| k.len() <= MAX_KEY_BYTES);
        let Some(key) = key else {
            return Grants::from_claim(claim);
        };
        if let Some(grants) = lock(&self.parsed).get(&key) {
            return Ok(grants.clone());
        }
        let grants = Grants::from_claim(claim)?;
        let mut parsed = lock(&self.parsed);
        if parsed.len() >= MAX_ENTRIES {
            parsed.clear();
        }
        parsed.insert(key, grants.clone());
        Ok(grants)
    }

    /// How many distinct claims it holds.
    pub fn len(&self) -> usize {
        lock(&self.parsed).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn equal_claims_share_one_parsed_grant() {
        let cache = GrantCache::default();
        let a = cache.parse(&claim(json!({"*": "rw"}))).unwrap();
        let b = cache.parse(&claim(json!({"*": "rw"}))).unwrap();
        assert!(a.shares_with(&b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn different_claims_get_their_own_grants() {
        let cache = GrantCache::default();
        let rw = cache.parse(&claim(json!({"t": "rw"}))).unwrap();
        let r = cache.parse(&claim(json!({"t": "r"}))).unwrap();
        assert!(!rw.shares_with(&r));
        assert!(rw.can_write("t"));
        assert!(!r.can_write("t"));
    }

    #[test]
    fn a_malformed_claim_is_refused_and_not_kept() {
        let cache = GrantCache::default();
        assert!(cache.parse(&claim(json!({"t": "x"}))).is_err());
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = GrantCache::default();
        for i in 0..MAX_ENTRIES + 10 {
            let table = format!("t{i}");
            cache.parse(&claim(json!({ table: "r" }))).unwrap();
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }

    #[test]
    fn a_long_claim_is_parsed_but_not_kept() {
        let cache = GrantCache::default();
        let tables: Map<String, Value> = (0..200)
            .map(|i| (format!("table{i}"), json!("r")))
            .collect();
        let grants = cache.parse(&tables).unwrap();
        assert!(grants.can_read("table7"));
        assert!(cache.is_empty());
    }
}
