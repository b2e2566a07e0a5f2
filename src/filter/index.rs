//! Equality and `in` predicates a filter's every match must satisfy, so a
//! fan-out can index cohorts by value: a change whose record holds
//! `owner = "ann"` looks up the key `("owner", "ann")` and finds ann's
//! "owner eq $user" cohort in O(1), whatever the number of users.
//!
//! [`value_key`] turns a JSON value into a canonical string such that two
//! values the filter's `eq` calls equal get the same key (numbers as
//! numbers, object keys sorted). The index only narrows: a cohort it finds
//! still evaluates its whole filter.

use serde_json::Value;

use super::{Filter, Op, Operand};

/// A necessary condition of a filter: `field` holds one of `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexKey {
    pub field: String,
    pub values: Vec<Operand>,
}

impl IndexKey {
    /// The keys of the values, `$user` bound to `user`.
    pub fn keys(&self, user: &str) -> Vec<String> {
        let bound = Value::String(user.to_owned());
        self.values
            .iter()
            .map(|o| match o {
                Operand::Value(v) => value_key(v),
                Operand::User => value_key(&bound),
            })
            .collect()
    }
}

impl Filter {
    /// An equality or `in` predicate every record the filter matches
    /// satisfies, if the filter has one: a top-level predicate, one child
    /// of a top-level `and`, or an `or` whose every branch has one on the
    /// same field (their union). `not` hides its predicates.
    pub fn index_key(&self) -> Option<IndexKey> {
        match self {
            Filter::Pred {
                field,
                op: Op::Eq | Op::In,
                values,
            } => Some(IndexKey {
                field: field.clone(),
                values: values.clone(),
            }),
            Filter::Pred { .. } | Filter::Not(_) => None,
            Filter::And(fs) => fs.iter().find_map(Filter::index_key),
            Filter::Or(fs) => {
                let mut keys = fs.iter().map(Filter::index_key);
                let mut union = keys.next()??;
                for k in keys {
                    let k = k?;
                    if k.field != union.field {
                        return None;
                    }
                    union.values.extend(k.values);
                }
                Some(union)
            }
        }
    }
}

/// A canonical key of a JSON value: equal under the filter's `eq` means
/// equal keys. Numbers key by their f64 value (distinct integers beyond
/// 2^53 may share a key: the index narrows, the filter decides).
pub fn value_key(v: &Value) -> String {
    let mut out = String::new();
    write_key(v, &mut out);
    out
}

fn write_key(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push('z'),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            let f = if f == 0.0 { 0.0 } else { f };
            out.push('n');
            out.push_str(&f.to_string());
            out.push(';');
        }
        Value::String(s) => {
            out.push('s');
            out.push_str(&s.len().to_string());
            out.push(':');
            out.push_str(s);
        }
        Value::Array(items) => {
            out.push('[');
            for i in items {
                write_key(i, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (k, i) in entries {
                out.push_str(&k.len().to_string());
                out.push(':');
                out.push_str(k);
                write_key(i, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::parse(&v, "filter").unwrap()
    }

    #[test]
    fn equality_under_and_is_extracted() {
        let k = f(json!({"and": [
            {"field": "due", "op": "lt", "value": 3},
            {"field": "owner", "op": "eq", "value": "$user"}
        ]}))
        .index_key()
        .unwrap();
        assert_eq!(k.field, "owner");
        assert_eq!(k.keys("ann"), [value_key(&json!("ann"))]);
    }

    #[test]
    fn or_of_the_same_field_unites_and_otherwise_gives_nothing() {
        let same = f(json!({"or": [
            {"field": "s", "op": "eq", "value": "a"},
            {"field": "s", "op": "in", "value": ["b", "c"]}
        ]}));
        assert_eq!(same.index_key().unwrap().values.len(), 3);
        let mixed = f(json!({"or": [
            {"field": "s", "op": "eq", "value": "a"},
            {"field": "t", "op": "eq", "value": "b"}
        ]}));
        assert!(mixed.index_key().is_none());
        assert!(f(json!({"not": {"field": "s", "op": "eq", "value": 1}}))
            .index_key()
            .is_none());
        assert!(f(json!({"field": "s", "op": "neq", "value": 1}))
            .index_key()
            .is_none());
    }

    #[test]
    fn values_equal_under_eq_share_a_key() {
        assert_eq!(value_key(&json!(1)), value_key(&json!(1.0)));
        assert_eq!(value_key(&json!(0)), value_key(&json!(-0.0)));
        assert_eq!(
            value_key(&json!({"a": 1, "b": [2]})),
            value_key(&json!({"b": [2.0], "a": 1}))
        );
        assert_ne!(value_key(&json!("1")), value_key(&json!(1)));
        assert_ne!(value_key(&json!(["ab"])), value_key(&json!(["a", "b"])));
        assert_ne!(value_key(&json!(null)), value_key(&json!("")));
    }
}
