//! The filter language of views and row grants (docs/protocol.md 3.5).
//!
//! A filter arrives as JSON (a view's `PUT`, a token's `rows`), is parsed
//! once here into a bounded [`Filter`] tree (depth, node count, `in` list
//! length and value sizes are capped, so a hostile filter cannot cost more
//! than a known amount per evaluation), and is then evaluated on a record's
//! stored values ([`eval`]) with `$user` bound to one subscriber's id. The
//! fan-out groups subscribers by (filter, bound `$user`, mask) and asks
//! [`Filter::index_key`] for an equality or `in` predicate every match must
//! satisfy, so a change finds the cohorts it can reach by value instead of
//! by looping over them.
//!
//! A malformed filter is refused with a [`FilterError`] naming the part
//! (`filter.and[1].op`), which the session's edge turns into `bad_request`.

pub mod eval;
pub mod index;

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::change::ids::is_valid_id;

pub use eval::Record;
pub use index::{value_key, IndexKey};

/// Deepest nesting of `and`/`or`/`not` accepted.
pub const MAX_DEPTH: usize = 8;
/// Most nodes (combinators and predicates) in one filter.
pub const MAX_NODES: usize = 64;
/// Most values in one `in` list.
pub const MAX_IN_VALUES: usize = 100;
/// Largest value operand, as serialized JSON bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// The value that stands for the subscriber's user id.
pub const USER: &str = "$user";

/// A comparison of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Contains,
    Empty,
    NotEmpty,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            "contains" => Op::Contains,
            "empty" => Op::Empty,
            "notEmpty" => Op::NotEmpty,
            _ => return None,
        })
    }

    /// Whether the op reads no `value` operand.
    fn unary(self) -> bool {
        matches!(self, Op::Empty | Op::NotEmpty)
    }
}

/// An operand: a JSON value, or `$user` (bound when evaluated).
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Value(Value),
    User,
}

impl Operand {
    fn from_json(v: &Value) -> Operand {
        match v {
            Value::String(s) if s == USER => Operand::User,
            other => Operand::Value(other.clone()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Operand::Value(v) => v.clone(),
            Operand::User => Value::String(USER.to_owned()),
        }
    }
}

/// A parsed, bounded filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// `{field, op, value}`; `values` holds one operand, or an `in` list,
    /// or none for `empty`/`notEmpty`.
    Pred {
        field: String,
        op: Op,
        values: Vec<Operand>,
    },
}

/// A filter that cannot be read; the message names the part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct FilterError(pub String);

impl Filter {
    /// Parses a filter; `at` names its place in the request
    /// (`"filter"`, `"tables.t.rows"`) for error messages.
    pub fn parse(json: &Value, at: &str) -> Result<Filter, FilterError> {
        let mut nodes = 0;
        parse_node(json, at, 1, &mut nodes)
    }

    /// The filter back as JSON (what a view's `PUT` stores, what an ack
    /// describes): parse(to_json(f)) == f.
    pub fn to_json(&self) -> Value {
        match self {
            Filter::And(fs) => json_obj(
                "and",
                Value::Array(fs.iter().map(Filter::to_json).collect()),
            ),
            Filter::Or(fs) => {
                json_obj("or", Value::Array(fs.iter().map(Filter::to_json).collect()))
            }
            Filter::Not(f) => json_obj("not", f.to_json()),
            Filter::Pred { field, op, values } => {
                let mut m = Map::new();
                m.insert("field".into(), Value::String(field.clone()));
                m.insert("op".into(), Value::String(op_name(*op).into()));
                match op {
                    Op::Empty | Op::NotEmpty => {}
                    Op::In => {
                        m.insert(
                            "value".into(),
                            Value::Array(values.iter().map(Operand::to_json).collect()),
                        );
                    }
                    _ => {
                        if let Some(v) = values.first() {
                            m.insert("value".into(), v.to_json());
                        }
                    }
                }
                Value::Object(m)
            }
        }
    }

    /// Every field the filter reads: what the fan-out must know of a record
    /// to evaluate it, and what a write check reads before the commit.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields(&self, out: &mut BTreeSet<String>) {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| f.collect_fields(out)),
            Filter::Not(f) => f.collect_fields(out),
            Filter::Pred { field, .. } => {
                out.insert(field.clone());
            }
        }
    }

    /// Whether `$user` appears: only then does the bound user belong to a
    /// cohort's key (one cohort serves every user of a user-free filter).
    pub fn uses_user(&self) -> bool {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().any(Filter::uses_user),
            Filter::Not(f) => f.uses_user(),
            Filter::Pred { values, .. } => values.contains(&Operand::User),
        }
    }
}

fn json_obj(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_owned(), v);
    Value::Object(m)
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "eq",
        Op::Neq => "neq",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::In => "in",
        Op::Contains => "contains",
        Op::Empty => "empty",
        Op::NotEmpty => "notEmpty",
    }
}

fn err<T>(msg: String) -> Result<T, FilterError> {
    Err(FilterError(msg))
}

fn parse_node(
    json: &Value,
    at: &str,
    depth: usize,
    nodes: &mut usize,
) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return err(format!("{at}: nested deeper than {MAX_DEPTH}"));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return err(format!("{at}: the filter has more than {MAX_NODES} nodes"));
    }
    let Value::Object(obj) = json else {
        return err(format!("{at} must be an object"));
    };
    if let Some(kind) = ["and", "or", "not"]
        .into_iter()
        .find(|k| obj.contains_key(*k))
    {
        if obj.len() != 1 {
            return err(format!("{at}: \"{kind}\" takes no other key"));
        }
        let inner = &obj[kind];
        let here = format!("{at}.{kind}");
        if kind == "not" {
            return Ok(Filter::Not(Box::new(parse_node(
                inner,
                &here,
                depth + 1,
                nodes,
            )?)));
        }
        let Value::Array(items) = inner else {
            return err(format!("{here} must be an array"));
        };
        if items.is_empty() {
            return err(format!("{here} must not be empty"));
        }
        let mut parsed = Vec::with_capacity(items.len().min(MAX_NODES));
        for (i, item) in items.iter().enumerate() {
            parsed.push(parse_node(item, &format!("{here}[{i}]"), depth + 1, nodes)?);
        }
        return Ok(if kind == "and" {
            Filter::And(parsed)
        } else {
            Filter::Or(parsed)
        });
    }
    parse_pred(obj, at)
}

fn parse_pred(obj: &Map<String, Value>, at: &str) -> Result<Filter, FilterError> {
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "field" | "op" | "value"))
    {
        return err(format!(
            "{at}: unknown key {:?} (and, or, not, or field/op/value)",
            shorten(k)
        ));
    }
    let field = match obj.get("field") {
        Some(Value::String(f)) if is_valid_id(f) => f.clone(),
        Some(_) => return err(format!("{at}.field must be a field id")),
        None => return err(format!("{at}.field is missing")),
    };
    let op = match obj.get("op") {
        Some(Value::String(s)) => Op::parse(s).ok_or_else(|| {
            FilterError(format!(
                "{at}.op: unknown op {:?} (eq, neq, lt, lte, gt, gte, in, contains, empty, notEmpty)",
                shorten(s)
            ))
        })?,
        Some(_) => return err(format!("{at}.op must be a string")),
        None => return err(format!("{at}.op is missing")),
    };
    let values = match (op, obj.get("value")) {
        (op, None) if op.unary() => Vec::new(),
        (op, Some(_)) if op.unary() => {
            return err(format!("{at}.value: {} takes no value", op_name(op)))
        }
        (_, None) => return err(format!("{at}.value is missing")),
        (Op::In, Some(Value::Array(list))) => {
            if list.len() > MAX_IN_VALUES {
                return err(format!("{at}.value: at most {MAX_IN_VALUES} values for in"));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                out.push(operand(v, &format!("{at}.value[{i}]"))?);
            }
            out
        }
        (Op::In, Some(_)) => return err(format!("{at}.value must be an array for in")),
        (_, Some(v)) => vec![operand(v, &format!("{at}.value"))?],
    };
    Ok(Filter::Pred { field, op, values })
}

fn operand(v: &Value, at: &str) -> Result<Operand, FilterError> {
    if json_size(v, MAX_VALUE_BYTES + 1) > MAX_VALUE_BYTES {
        return err(format!("{at}: larger than {MAX_VALUE_BYTES} bytes"));
    }
    Ok(Operand::from_json(v))
}

/// An upper-bounded estimate of a value's serialized size: stops counting
/// at `cap`, so a huge operand costs no more than `cap` to measure.
fn json_size(v: &Value, cap: usize) -> usize {
    fn walk(v: &Value, total: &mut usize, cap: usize) {
        if *total > cap {
            return;
        }
        match v {
            Value::Null | Value::Bool(_) => *total += 5,
            Value::Number(_) => *total += 24,
            Value::String(s) => *total += s.len() + 2,
            Value::Array(items) => {
                *total += 2;
                for i in items {
                    walk(i, total, cap);
                }
            }
            Value::Object(m) => {
                *total += 2;
                for (k, i) in m {
                    *total += k.len() + 3;
                    walk(i, total, cap);
                }
            }
        }
    }
    let mut total = 0;
    walk(v, &mut total, cap);
    total
}

/// Text as an error message may quote it: at most 64 characters (also
/// the grants' ids).
pub(crate) fn shorten(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Filter, FilterError> {
        Filter::parse(&v, "filter")
    }

    #[test]
    fn a_filter_round_trips_through_json() {
        let v = json!({"and": [
            {"field": "owner", "op": "eq", "value": "$user"},
            {"not": {"field": "status", "op": "in", "value": ["done", 3]}},
            {"or": [{"field": "due", "op": "empty"}, {"field": "due", "op": "lt", "value": 10}]}
        ]});
        let f = parse(v.clone()).unwrap();
        assert_eq!(f.to_json(), v);
        assert_eq!(parse(f.to_json()).unwrap(), f);
    }

    #[test]
    fn fields_and_user_use_are_reported() {
        let f = parse(json!({"or": [
            {"field": "owner", "op": "in", "value": ["a", "$user"]},
            {"field": "status", "op": "notEmpty"}
        ]}))
        .unwrap();
        assert_eq!(
            f.fields().into_iter().collect::<Vec<_>>(),
            ["owner", "status"]
        );
        assert!(f.uses_user());
        assert!(!parse(json!({"field": "a", "op": "eq", "value": 1}))
            .unwrap()
            .uses_user());
    }

    #[test]
    fn malformed_filters_are_refused_naming_the_part() {
        let many: Vec<Value> = (0..101).map(|i| json!(i)).collect();
        let cases = [
            (json!([]), "filter must be an object"),
            (json!({"and": {}}), "filter.and must be an array"),
            (json!({"and": []}), "filter.and must not be empty"),
            (
                json!({"and": [{"field": "a", "op": "eq", "value": 1}], "x": 1}),
                "takes no other key",
            ),
            (
                json!({"or": [{"field": "a", "op": "eq"}]}),
                "filter.or[0].value is missing",
            ),
            (
                json!({"field": "a", "op": "like", "value": 1}),
                "filter.op: unknown op \"like\"",
            ),
            (
                json!({"field": "a{b", "op": "eq", "value": 1}),
                "filter.field must be a field id",
            ),
            (json!({"op": "eq", "value": 1}), "filter.field is missing"),
            (json!({"field": "a", "value": 1}), "filter.op is missing"),
            (
                json!({"field": "a", "op": "empty", "value": 1}),
                "filter.value: empty takes no value",
            ),
            (
                json!({"field": "a", "op": "in", "value": 1}),
                "filter.value must be an array",
            ),
            (
                json!({"field": "a", "op": "in", "value": many}),
                "at most 100 values",
            ),
            (
                json!({"field": "a", "op": "eq", "value": "x".repeat(2000)}),
                "filter.value: larger than",
            ),
            (
                json!({"field": "a", "op": "eq", "value": 1, "vaule": 2}),
                "unknown key \"vaule\"",
            ),
            (
                json!({"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"field": "a", "op": "empty"}}}}}}}}}),
                "nested deeper",
            ),
        ];
        for (v, needle) in cases {
            let e = parse(v.clone()).unwrap_err();
            assert!(e.0.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn node_count_is_bounded() {
        let preds: Vec<Value> = (0..MAX_NODES)
            .map(|_| json!({"field": "a", "op": "empty"}))
            .collect();
        let e = parse(json!({"and": preds})).unwrap_err();
        assert!(e.0.contains("more than 64 nodes"), "{e}");
    }
}
