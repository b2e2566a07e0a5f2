//! Evaluating a [`Filter`] on one record's stored values, with `$user`
//! bound to one subscriber's id.
//!
//! JSON value semantics, as everywhere in rtsync: numbers compare as
//! numbers (`1` equals `1.0`), strings by code point, arrays and objects
//! by their contents. A field the record does not hold reads as `null`.
//! Ordering ops (`lt`, `lte`, `gt`, `gte`) hold only between two numbers
//! or two strings; between other types they are false (and so is their
//! `not`-less form: `neq` is the only negation besides `not`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Number, Value};

use super::{Filter, Op, Operand};

/// A record's values, as a filter reads them.
pub trait Record {
    /// The stored value of `field`; `None` when the record has none.
    fn value(&self, field: &str) -> Option<&Value>;
}

impl Record for HashMap<String, Value> {
    fn value(&self, field: &str) -> Option<&Value> {
        self.get(field)
    }
}

impl Record for BTreeMap<String, Value> {
    fn value(&self, field: &str) -> Option<&Value> {
        self.get(field)
    }
}

impl Record for Map<String, Value> {
    fn value(&self, field: &str) -> Option<&Value> {
        self.get(field)
    }
}

const NULL: Value = Value::Null;

impl Filter {
    /// Whether the record matches, `$user` being `user`.
    pub fn matches(&self, record: &dyn Record, user: &str) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(record, user)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(record, user)),
            Filter::Not(f) => !f.matches(record, user),
            Filter::Pred { field, op, values } => {
                let have = record.value(field).unwrap_or(&NULL);
                pred(have, *op, values, user)
            }
        }
    }
}

fn bind<'a>(o: &'a Operand, user: &'a str) -> Bound<'a> {
    match o {
        Operand::Value(v) => Bound::Value(v),
        Operand::User => Bound::User(user),
    }
}

/// An operand with `$user` bound, without copying the user id.
enum Bound<'a> {
    Value(&'a Value),
    User(&'a str),
}

impl Bound<'_> {
    fn eq(&self, have: &Value) -> bool {
        match self {
            Bound::Value(v) => json_eq(have, v),
            Bound::User(u) => have.as_str() == Some(*u),
        }
    }

    fn cmp(&self, have: &Value) -> Option<Ordering> {
        match self {
            Bound::Value(v) => json_cmp(have, v),
            Bound::User(u) => have.as_str().map(|h| h.cmp(u)),
        }
    }
}

fn pred(have: &Value, op: Op, values: &[Operand], user: &str) -> bool {
    let first = values.first().map(|o| bind(o, user));
    let ordered =
        |want: fn(Ordering) -> bool| first.as_ref().and_then(|b| b.cmp(have)).is_some_and(want);
    match op {
        Op::Eq => first.is_some_and(|b| b.eq(have)),
        Op::Neq => !first.is_some_and(|b| b.eq(have)),
        Op::Lt => ordered(Ordering::is_lt),
        Op::Lte => ordered(Ordering::is_le),
        Op::Gt => ordered(Ordering::is_gt),
        Op::Gte => ordered(Ordering::is_ge),
        Op::In => values.iter().any(|o| bind(o, user).eq(have)),
        Op::Contains => first.is_some_and(|b| contains(have, &b)),
        Op::Empty => is_empty(have),
        Op::NotEmpty => !is_empty(have),
    }
}

fn contains(have: &Value, want: &Bound) -> bool {
    match have {
        Value::String(s) => match want {
            Bound::Value(Value::String(w)) => s.contains(w.as_str()),
            Bound::User(u) => s.contains(u),
            Bound::Value(_) => false,
        },
        Value::Array(items) => items.iter().any(|i| want.eq(i)),
        _ => false,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// JSON equality with numbers as numbers.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Order between two numbers or two strings; `None` otherwise.
fn json_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Integers compare exactly (i64 and u64 beyond 2^53 included); anything
/// with a fraction compares as f64.
fn num_cmp(x: &Number, y: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::parse(&v, "filter").unwrap()
    }

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn dollar_user_binds_to_the_subscriber() {
        let mine = f(json!({"field": "owner", "op": "eq", "value": "$user"}));
        let r = rec(json!({"owner": "ann"}));
        assert!(mine.matches(&r, "ann"));
        assert!(!mine.matches(&r, "bob"));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let r = rec(json!({"n": 1.0, "big": 9007199254740993u64}));
        assert!(f(json!({"field": "n", "op": "eq", "value": 1})).matches(&r, "u"));
        assert!(f(json!({"field": "n", "op": "lt", "value": 2})).matches(&r, "u"));
        assert!(f(json!({"field": "n", "op": "gte", "value": 1})).matches(&r, "u"));
        assert!(
            !f(json!({"field": "big", "op": "eq", "value": 9007199254740992u64})).matches(&r, "u")
        );
    }

    #[test]
    fn strings_compare_by_code_point_and_mixed_types_never_order() {
        let r = rec(json!({"s": "b", "n": 5}));
        assert!(f(json!({"field": "s", "op": "gt", "value": "a"})).matches(&r, "u"));
        assert!(f(json!({"field": "s", "op": "lt", "value": "é"})).matches(&r, "u"));
        assert!(!f(json!({"field": "n", "op": "gt", "value": "1"})).matches(&r, "u"));
        assert!(!f(json!({"field": "n", "op": "lte", "value": "1"})).matches(&r, "u"));
    }

    #[test]
    fn a_missing_field_reads_as_null() {
        let r = rec(json!({}));
        assert!(f(json!({"field": "x", "op": "eq", "value": null})).matches(&r, "u"));
        assert!(f(json!({"field": "x", "op": "empty"})).matches(&r, "u"));
        assert!(f(json!({"field": "x", "op": "neq", "value": 1})).matches(&r, "u"));
        assert!(!f(json!({"field": "x", "op": "notEmpty"})).matches(&r, "u"));
    }

    #[test]
    fn in_matches_any_listed_value() {
        let r = rec(json!({"s": "open"}));
        assert!(f(json!({"field": "s", "op": "in", "value": ["done", "open"]})).matches(&r, "u"));
        assert!(!f(json!({"field": "s", "op": "in", "value": ["done"]})).matches(&r, "u"));
        assert!(f(json!({"field": "s", "op": "in", "value": ["$user"]})).matches(&r, "open"));
    }

    #[test]
    fn contains_works_on_strings_and_arrays() {
        let r = rec(json!({"s": "hello world", "tags": ["a", 2, {"k": 1}]}));
        assert!(f(json!({"field": "s", "op": "contains", "value": "lo w"})).matches(&r, "u"));
        assert!(f(json!({"field": "tags", "op": "contains", "value": 2.0})).matches(&r, "u"));
        assert!(f(json!({"field": "tags", "op": "contains", "value": {"k": 1}})).matches(&r, "u"));
        assert!(f(json!({"field": "tags", "op": "contains", "value": "$user"})).matches(&r, "a"));
        assert!(!f(json!({"field": "s", "op": "contains", "value": 1})).matches(&r, "u"));
    }

    #[test]
    fn empty_covers_null_empty_string_array_and_object() {
        for v in [json!(null), json!(""), json!([]), json!({})] {
            assert!(f(json!({"field": "x", "op": "empty"})).matches(&rec(json!({"x": v})), "u"));
        }
        for v in [json!(0), json!(false), json!(" "), json!([null])] {
            assert!(f(json!({"field": "x", "op": "notEmpty"})).matches(&rec(json!({"x": v})), "u"));
        }
    }

    #[test]
    fn and_or_not_combine() {
        let r = rec(json!({"a": 1, "b": 2}));
        let t = json!({"field": "a", "op": "eq", "value": 1});
        let no = json!({"field": "b", "op": "eq", "value": 1});
        assert!(!f(json!({"and": [t, no]})).matches(&r, "u"));
        assert!(f(json!({"or": [t, no]})).matches(&r, "u"));
        assert!(f(json!({"not": no})).matches(&r, "u"));
    }
}
