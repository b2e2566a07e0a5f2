//! What one identity may read and write, table by table and field by field
//! (docs/protocol.md 2.1). A token's `tables` claim (or, in development
//! mode, the seed's `authenticate`) is parsed once into [`Grants`]; every
//! read path then asks a table's [`TableGrant`] for its [`ReadMask`] (none
//! when every field is readable: today's path, untouched), and every write
//! path asks it whether each touched field is writable, before `FCALL`.
//!
//! A field's permission is `fields[fieldId]`, else `fields["*"]`, else
//! `access`, and never more than `access`.
//!
//! v1.3 (2.2): a table grant may also carry `rows`, a filter (`crate::filter`)
//! of the records the user may see and write; it is parsed here with the
//! rest of the claim, so a malformed one refuses the token.

pub mod bases;
pub mod mask;
pub mod masking;
pub mod shared;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::change::ids::is_valid_id;
use crate::change::FieldChange;
use crate::filter::{shorten, Filter};
pub use bases::BaseGrants;
pub use mask::ReadMask;
pub use shared::GrantCache;

/// What a grant allows on a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What a grant allows on one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldAccess {
    None,
    Read,
    ReadWrite,
}

impl FieldAccess {
    fn parse(s: &str) -> Option<FieldAccess> {
        match s {
            "none" => Some(FieldAccess::None),
            "r" => Some(FieldAccess::Read),
            "rw" => Some(FieldAccess::ReadWrite),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            FieldAccess::None => "none",
            FieldAccess::Read => "r",
            FieldAccess::ReadWrite => "rw",
        }
    }
}

impl From<Access> for FieldAccess {
    fn from(a: Access) -> FieldAccess {
        match a {
            Access::Read => FieldAccess::Read,
            Access::ReadWrite => FieldAccess::ReadWrite,
        }
    }
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "r" => Some(Access::Read),
            "rw" => Some(Access::ReadWrite),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Access::Read => "r",
            Access::ReadWrite => "rw",
        }
    }
}

/// One table's grant: its access, and the permissions of the fields that
/// differ from it (already capped at `access`).
#[derive(Clone, Debug)]
pub struct TableGrant {
    pub access: Access,
    /// `fields["*"]` capped, else `access`.
    default: FieldAccess,
    /// Explicit fields, capped.
    fields: BTreeMap<String, FieldAccess>,
    /// The readable fields when some are hidden; shared by every
    /// connection of this identity, compared by value in the hub.
    mask: Option<Arc<ReadMask>>,
    /// v1.3: the records the user may see and write; `None` for all.
    /// Shared by every connection of this identity, so a fan-out can
    /// group them by pointer first.
    rows: Option<Arc<Filter>>,
}

impl TableGrant {
    /// Every field with the table's access (a v1 string grant).
    pub fn whole(access: Access) -> TableGrant {
        TableGrant {
            access,
            default: access.into(),
            fields: BTreeMap::new(),
            mask: None,
            rows: None,
        }
    }

    fn new(
        access: Access,
        default: Option<FieldAccess>,
        fields: BTreeMap<String, FieldAccess>,
    ) -> Self {
        let cap = FieldAccess::from(access);
        let default = default.unwrap_or(cap).min(cap);
        let fields: BTreeMap<String, FieldAccess> =
            fields.into_iter().map(|(f, a)| (f, a.min(cap))).collect();
        let default_readable = default != FieldAccess::None;
        let exceptions: Vec<String> = fields
            .iter()
            .filter(|(_, a)| (**a != FieldAccess::None) != default_readable)
            .map(|(f, _)| f.clone())
            .collect();
        let mask = ReadMask::new(default_readable, exceptions).map(Arc::new);
        TableGrant {
            access,
            default,
            fields,
            mask,
            rows: None,
        }
    }

    /// v1.3: the records this grant shows, `None` when it shows every one.
    pub fn rows(&self) -> Option<&Arc<Filter>> {
        self.rows.as_ref()
    }

    /// The permission on one field.
    pub fn field(&self, field: &str) -> FieldAccess {
        self.fields.get(field).copied().unwrap_or(self.default)
    }

    /// The fields this grant hides, as a mask; `None` when it hides none.
    pub fn read_mask(&self) -> Option<&Arc<ReadMask>> {
        self.mask.as_ref()
    }

    /// The first field of `changes` this grant may not write, if any. A
    /// refused change is refused whole (docs/protocol.md 2.1).
    pub fn unwritable<'a>(&self, changes: &'a [FieldChange]) -> Option<&'a str> {
        changes
            .iter()
            .map(|c| c.field_id.as_str())
            .find(|f| self.field(f) != FieldAccess::ReadWrite)
    }

    /// The effective grant, as the subscribe ack reports it: `access`, and
    /// `fields` (each explicit field and `"*"`) when any field differs.
    pub fn describe(&self) -> Value {
        let mut out = json!({"access": self.access.as_str()});
        let differs = self.default != FieldAccess::from(self.access)
            || self.fields.values().any(|a| *a != self.default);
        if differs {
            let mut fields = Map::new();
            fields.insert("*".to_owned(), json!(self.default.as_str()));
            for (f, a) in &self.fields {
                fields.insert(f.clone(), json!(a.as_str()));
            }
            out["fields"] = Value::Object(fields);
        }
        if let Some(rows) = &self.rows {
            out["rows"] = rows.to_json();
        }
        out
    }
}

/// Table grants of one identity; a clone shares them (identities with
/// equal claims hold one copy, see [`GrantCache`]).
#[derive(Clone, Debug, Default)]
pub struct Grants(Arc<HashMap<String, TableGrant>>);

/// A grant claim that cannot be read; the message names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct GrantError(pub String);

/// Most tables one identity's grants may name.
const MAX_TABLES: usize = 10_000;
/// Most fields one table's grant may name.
const MAX_FIELDS: usize = 10_000;

impl Grants {
    /// Every table, read and write (development mode's seed form).
    pub fn all() -> Grants {
        static ALL: std::sync::OnceLock<Grants> = std::sync::OnceLock::new();
        ALL.get_or_init(|| {
            Grants(Arc::new(HashMap::from([(
                "*".to_owned(),
                TableGrant::whole(Access::ReadWrite),
            )])))
        })
        .clone()
    }

    /// Whether `other` is the same parsed grants (not merely equal ones).
    pub fn shares_with(&self, other: &Grants) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Parses a `tables` claim: table id (or `"*"`) to `"r"`, `"rw"` or
    /// `{"access", "fields"}`. Anything else is refused, naming the key:
    /// a grant that is misread could show a hidden column.
    pub fn from_claim(claim: &Map<String, Value>) -> Result<Grants, GrantError> {
        if claim.len() > MAX_TABLES {
            return Err(GrantError(format!(
                "tables: at most {MAX_TABLES} tables per token"
            )));
        }
        let mut grants = HashMap::with_capacity(claim.len());
        for (table, value) in claim {
            if table != "*" && !is_valid_id(table) {
                return Err(GrantError(format!(
                    "tables: key {:?} is neither a table id nor \"*\"",
                    shorten(table)
                )));
            }
            grants.insert(table.clone(), table_grant(table, value)?);
        }
        Ok(Grants(Arc::new(grants)))
    }

    /// The grant that applies to `table`: its own, else `"*"`'s.
    pub fn table(&self, table: &str) -> Option<&TableGrant> {
        self.0.get(table).or_else(|| self.0.get("*"))
    }

    pub fn can_read(&self, table: &str) -> bool {
        self.table(table).is_some()
    }

    pub fn can_write(&self, table: &str) -> bool {
        self.table(table)
            .is_some_and(|g| g.access == Access::ReadWrite)
    }

    /// v1.3: the row filter of `table`'s grant, if it has one.
    pub fn rows(&self, table: &str) -> Option<Arc<Filter>> {
        self.table(table).and_then(|g| g.rows().cloned())
    }

    /// The mask of `table`'s reads; `None` when every field is readable
    /// (or the table is not granted at all: reads are refused before).
    pub fn read_mask(&self, table: &str) -> Option<Arc<ReadMask>> {
        self.table(table).and_then(|g| g.read_mask().cloned())
    }
}

fn table_grant(table: &str, value: &Value) -> Result<TableGrant, GrantError> {
    let at = |what: &str| format!("tables.{}{what}", shorten(table));
    match value {
        Value::String(s) => Access::parse(s)
            .map(TableGrant::whole)
            .ok_or_else(|| GrantError(format!("{} must be \"r\", \"rw\" or an object", at("")))),
        Value::Object(obj) => {
            for key in obj.keys() {
                if key != "access" && key != "fields" && key != "rows" {
                    return Err(GrantError(format!(
                        "{}: unknown key {:?} (only \"access\", \"fields\" and \"rows\")",
                        at(""),
                        shorten(key)
                    )));
                }
            }
            let access = obj
                .get("access")
                .and_then(Value::as_str)
                .and_then(Access::parse)
                .ok_or_else(|| GrantError(format!("{} must be \"r\" or \"rw\"", at(".access"))))?;
            let fields = match obj.get("fields") {
                None => Map::new(),
                Some(Value::Object(f)) => f.clone(),
                Some(_) => return Err(GrantError(format!("{} must be an object", at(".fields")))),
            };
            if fields.len() > MAX_FIELDS {
                return Err(GrantError(format!(
                    "{}: at most {MAX_FIELDS} fields",
                    at(".fields")
                )));
            }
            let mut default = None;
            let mut explicit = BTreeMap::new();
            for (field, perm) in &fields {
                if field != "*" && !is_valid_id(field) {
                    return Err(GrantError(format!(
                        "{}: key {:?} is neither a field id nor \"*\"",
                        at(".fields"),
                        shorten(field)
                    )));
                }
                let perm = perm.as_str().and_then(FieldAccess::parse).ok_or_else(|| {
                    GrantError(format!(
                        "{}.{} must be \"none\", \"r\" or \"rw\"",
                        at(".fields"),
                        shorten(field)
                    ))
                })?;
                if field == "*" {
                    default = Some(perm);
                } else {
                    explicit.insert(field.clone(), perm);
                }
            }
            let mut grant = TableGrant::new(access, default, explicit);
            if let Some(rows) = obj.get("rows") {
                let filter = Filter::parse(rows, &at(".rows")).map_err(|e| GrantError(e.0))?;
                grant.rows = Some(Arc::new(filter));
            }
            Ok(grant)
        }
        _ => Err(GrantError(format!(
            "{} must be \"r\", \"rw\" or an object",
            at("")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(v: Value) -> Result<Grants, GrantError> {
        Grants::from_claim(v.as_object().unwrap())
    }

    fn change(field: &str) -> FieldChange {
        FieldChange {
            field_id: field.to_owned(),
            old_value: None,
            new_value: Some(json!(1)),
        }
    }

    #[test]
    fn string_grants_read_and_write_every_field() {
        let g = grants(json!({"t1": "r", "*": "rw"})).unwrap();
        assert!(g.can_read("t1") && !g.can_write("t1"));
        assert!(g.can_write("t2"));
        assert!(g.read_mask("t1").is_none() && g.read_mask("t2").is_none());
        assert_eq!(g.table("t1").unwrap().unwritable(&[change("a")]), Some("a"));
        assert_eq!(g.table("t2").unwrap().unwritable(&[change("a")]), None);
    }

    #[test]
    fn a_field_takes_its_own_then_star_then_access_capped_at_access() {
        let g = grants(json!({"t": {"access": "r", "fields": {"salary": "none", "notes": "rw"}}}))
            .unwrap();
        let t = g.table("t").unwrap();
        assert_eq!(t.field("salary"), FieldAccess::None);
        assert_eq!(
            t.field("notes"),
            FieldAccess::Read,
            "never more than access"
        );
        assert_eq!(t.field("name"), FieldAccess::Read);
        let mask = t.read_mask().unwrap();
        assert!(!mask.readable("salary") && mask.readable("name"));
    }

    #[test]
    fn star_none_shows_only_the_listed_fields() {
        let g =
            grants(json!({"t": {"access": "rw", "fields": {"*": "none", "name": "r", "x": "rw"}}}))
                .unwrap();
        let t = g.table("t").unwrap();
        let mask = t.read_mask().unwrap();
        assert!(mask.readable("name") && mask.readable("x") && !mask.readable("other"));
        assert_eq!(t.unwritable(&[change("x"), change("name")]), Some("name"));
        assert_eq!(
            t.describe(),
            json!({"access": "rw", "fields": {"*": "none", "name": "r", "x": "rw"}})
        );
    }

    #[test]
    fn equal_field_sets_make_equal_masks() {
        let a = grants(json!({"t": {"access": "rw", "fields": {"salary": "none", "status": "r"}}}))
            .unwrap();
        let b = grants(json!({"t": {"access": "r", "fields": {"salary": "none"}}})).unwrap();
        assert_eq!(a.read_mask("t"), b.read_mask("t"));
        let c = grants(json!({"t": {"access": "rw", "fields": {"status": "r"}}})).unwrap();
        assert!(
            c.read_mask("t").is_none(),
            "read-only fields are still readable"
        );
        assert_eq!(c.table("t").unwrap().describe()["fields"]["status"], "r");
    }

    #[test]
    fn a_rows_filter_is_parsed_and_described() {
        let rows = json!({"field": "owner", "op": "eq", "value": "$user"});
        let g = grants(json!({"t": {"access": "rw", "rows": rows.clone()}, "u": "r"})).unwrap();
        let f = g.rows("t").unwrap();
        assert!(f.uses_user());
        assert!(g.rows("u").is_none());
        assert!(g.read_mask("t").is_none(), "rows hide no field");
        assert_eq!(
            g.table("t").unwrap().describe(),
            json!({"access": "rw", "rows": rows})
        );
    }

    #[test]
    fn malformed_grants_are_refused_naming_the_part() {
        let cases = [
            (json!({"t": "w"}), "tables.t must be"),
            (json!({"t": 1}), "tables.t must be"),
            (json!({"t": {"fields": {}}}), "tables.t.access"),
            (
                json!({"t": {"access": "rw", "fields": []}}),
                "tables.t.fields must be an object",
            ),
            (
                json!({"t": {"access": "rw", "fields": {"f": "x"}}}),
                "tables.t.fields.f must be",
            ),
            (
                json!({"t": {"access": "rw", "fields": {"a{b": "r"}}}),
                "neither a field id",
            ),
            (
                json!({"t": {"access": "rw", "feilds": {}}}),
                "unknown key \"feilds\"",
            ),
            (json!({"a}b": "r"}), "neither a table id"),
            (
                json!({"t": {"access": "r", "rows": {"field": "o", "op": "is"}}}),
                "tables.t.rows.op: unknown op",
            ),
        ];
        for (claim, needle) in cases {
            let e = grants(claim.clone()).unwrap_err();
            assert!(e.0.contains(needle), "{claim}: {e}");
        }
    }
}
