//! Cohorts of filtered subscribers (docs/protocol.md 2.2 and 3.5): the
//! subscribers of a table whose (filter, bound `$user`, field mask, viewId)
//! are equal form one cohort, evaluated and encoded once per event.
//!
//! Data flow: the hub adds a subscriber with a [`SubFilter`] (its row grant
//! ∧ its view's filter) to its table's [`Cohorts`] at join and removes it
//! at leave. For each record event the hub asks [`Cohorts::candidates`] for
//! the cohorts the record's before- or after-state may match: equality and
//! `in` predicates (`Filter::index_key`, e.g. `owner eq $user`) index
//! cohorts by value, so a change reaches its owner's cohort in O(1)
//! whatever the number of users; cohorts whose filter has no such predicate
//! are always candidates. Each candidate evaluates its filter on both
//! states and [`decide`]s what its members get.

pub mod steps;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::change::ChangeEvent;
use crate::filter::{value_key, Filter};
use crate::grant::ReadMask;

/// What a subscription filters by: its row grant ∧ its view's filter.
#[derive(Clone, Debug)]
pub struct SubFilter {
    pub filter: Arc<Filter>,
    /// The subscriber's user id (`$user`).
    pub user: Arc<str>,
    /// The view named on subscribe when its filter is part of `filter`;
    /// `None` (`viewId: null` on the wire) when only the row grant filters.
    pub view_id: Option<Arc<str>>,
}

impl SubFilter {
    /// A subscription's filter from its row grant and its view's filter
    /// (either may be absent); `None` when neither is.
    pub fn of(
        rows: Option<Arc<Filter>>,
        view: Option<(Arc<Filter>, &str)>,
        user: &str,
    ) -> Option<SubFilter> {
        let (filter, view_id) = match (rows, view) {
            (None, None) => return None,
            (Some(r), None) => (r, None),
            (None, Some((v, id))) => (v, Some(Arc::from(id))),
            (Some(r), Some((v, id))) => (
                Arc::new(Filter::And(vec![(*r).clone(), (*v).clone()])),
                Some(Arc::from(id)),
            ),
        };
        Some(SubFilter {
            filter,
            user: Arc::from(user),
            view_id,
        })
    }
}

/// What a subscription is scoped by, kept so its filter can follow a
/// view's changes: the row grant, the view it names (with that view's
/// filter as last known), the user.
#[derive(Clone, Debug)]
pub struct Scope {
    pub rows: Option<Arc<Filter>>,
    pub view: Option<(Arc<str>, Option<Arc<Filter>>)>,
    pub user: Arc<str>,
}

impl Scope {
    /// The scope of a subscription; `None` when nothing may ever filter
    /// it (no row grant, no view named).
    pub fn of(
        rows: Option<Arc<Filter>>,
        view: Option<(&str, Option<Arc<Filter>>)>,
        user: &str,
    ) -> Option<Scope> {
        if rows.is_none() && view.is_none() {
            return None;
        }
        Some(Scope {
            rows,
            view: view.map(|(id, f)| (Arc::from(id), f)),
            user: Arc::from(user),
        })
    }

    /// The filter in force now.
    pub fn filter(&self) -> Option<SubFilter> {
        let view = self
            .view
            .as_ref()
            .and_then(|(id, f)| Some((f.clone()?, &**id)));
        SubFilter::of(self.rows.clone(), view, &self.user)
    }
}

/// A user's presence (a `table_users` entry, a `user_joined` or
/// `user_reconnected` notice) without where they point, select, edit or
/// look: a filtered subscriber is not told about records that may be
/// outside its rows (docs/protocol.md 3.5, "Presence").
pub fn unplaced(user: &mut Value) {
    if let Some(doc) = user.as_object_mut() {
        for key in ["cursor", "selection", "editing", "viewport"] {
            doc.remove(key);
        }
    }
}

/// A `view` event setting a view's filter: the view and its new filter
/// (`None`: the whole table; a filter that does not parse is logged and
/// taken as none, as the sidecar's view registry does).
pub fn view_change(e: &ChangeEvent) -> Option<(&str, Option<Arc<Filter>>)> {
    if e.entity_type != "view" || e.kind != "filter" {
        return None;
    }
    let new = e
        .changes
        .as_ref()
        .and_then(|c| c.as_array()?.first()?.get("newValue").cloned())
        .filter(|v| !v.is_null());
    let filter = new.and_then(|v| match Filter::parse(&v, "filter") {
        Ok(f) => Some(Arc::new(f)),
        Err(err) => {
            tracing::warn!(view = %e.entity_id, error = %err, "a view event's filter does not parse");
            None
        }
    });
    Some((&e.entity_id, filter))
}

/// One cohort: the subscribers sharing a filter, a bound user, a mask and
/// a viewId.
pub struct Cohort {
    pub filter: Arc<Filter>,
    pub user: Arc<str>,
    pub view_id: Option<Arc<str>>,
    pub mask: Option<Arc<ReadMask>>,
    /// Connection ids.
    pub members: BTreeSet<Arc<str>>,
    key: String,
    index: Vec<(String, String)>,
}

/// A table's cohorts, indexed by the values their filters require.
#[derive(Default)]
pub struct Cohorts {
    next: u64,
    list: HashMap<u64, Cohort>,
    by_key: HashMap<String, u64>,
    /// (field, value key) → cohorts requiring that value.
    index: HashMap<(String, String), Vec<u64>>,
    /// Indexed fields, with how many cohorts use each.
    fields: HashMap<String, usize>,
    /// Cohorts evaluated on every event of the table.
    unindexed: BTreeSet<u64>,
}

impl Cohorts {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn get(&self, id: u64) -> Option<&Cohort> {
        self.list.get(&id)
    }

    /// All cohort ids (events that are not about a record reach them all).
    pub fn ids(&self) -> Vec<u64> {
        self.list.keys().copied().collect()
    }

    /// Adds `conn` to its cohort (made on first need); the cohort's id.
    pub fn add(&mut self, conn: Arc<str>, f: &SubFilter, mask: Option<Arc<ReadMask>>) -> u64 {
        let bound = if f.filter.uses_user() { &*f.user } else { "" };
        let key = format!(
            "{}\u{0}{bound}\u{0}{:?}\u{0}{:?}",
            f.filter.to_json(),
            mask.as_deref(),
            f.view_id.as_deref()
        );
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(c) = self.list.get_mut(&id) {
                c.members.insert(conn);
                return id;
            }
        }
        let id = self.next;
        self.next += 1;
        let index: Vec<(String, String)> = match f.filter.index_key() {
            Some(k) => {
                let keys: BTreeSet<String> = k.keys(&f.user).into_iter().collect();
                keys.into_iter().map(|v| (k.field.clone(), v)).collect()
            }
            None => Vec::new(),
        };
        if index.is_empty() {
            self.unindexed.insert(id);
        } else if let Some((field, _)) = index.first() {
            *self.fields.entry(field.clone()).or_default() += 1;
        }
        for k in &index {
            self.index.entry(k.clone()).or_default().push(id);
        }
        self.by_key.insert(key.clone(), id);
        self.list.insert(
            id,
            Cohort {
                filter: f.filter.clone(),
                user: f.user.clone(),
                view_id: f.view_id.clone(),
                mask,
                members: BTreeSet::from([conn]),
                key,
                index,
            },
        );
        id
    }

    /// Removes `conn` from cohort `id`, and the cohort once empty.
    pub fn remove(&mut self, id: u64, conn: &str) {
        let Some(c) = self.list.get_mut(&id) else {
            return;
        };
        c.members.remove(conn);
        if !c.members.is_empty() {
            return;
        }
        let Some(c) = self.list.remove(&id) else {
            return;
        };
        self.by_key.remove(&c.key);
        self.unindexed.remove(&id);
        if let Some((field, _)) = c.index.first() {
            if let Some(n) = self.fields.get_mut(field) {
                *n -= 1;
                if *n == 0 {
                    self.fields.remove(field);
                }
            }
        }
        for k in c.index {
            if let Some(ids) = self.index.get_mut(&k) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.index.remove(&k);
                }
            }
        }
    }

    /// The cohorts `before` or `after` may match: those indexed under one
    /// of their values, and the unindexed ones. Sorted, each once.
    pub fn candidates(
        &self,
        before: Option<&Map<String, Value>>,
        after: Option<&Map<String, Value>>,
    ) -> Vec<u64> {
        let mut out: BTreeSet<u64> = self.unindexed.clone();
        for field in self.fields.keys() {
            for state in [before, after].into_iter().flatten() {
                let v = state.get(field).unwrap_or(&Value::Null);
                if let Some(ids) = self.index.get(&(field.clone(), value_key(v))) {
                    out.extend(ids.iter().copied());
                }
            }
        }
        out.into_iter().collect()
    }
}

/// What a cohort's members get for one record event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The change, masked (the record stays in their rows).
    Change,
    /// `record_entered_view` with the record's masked state.
    Enter,
    /// `record_left_view`.
    Leave,
    Nothing,
}

/// How a record event's states are known (`steps`, and the hub's jumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Exactly, before and after the event; members hold the before-state.
    Exact,
    /// The record moved again since: the after-state is the newer stored
    /// one (the fan-out jumps its members there), the before-state is a
    /// guess.
    Stale,
    /// The event is at or before a version its members were already
    /// jumped to: they hold that newer state.
    Shadowed,
}

/// The decision for a cohort whose filter matched the record before the
/// event (`before`) and after it (`after`). A stale step sends the state
/// (enter) rather than the change, so a member never applies a change to a
/// record it may not hold, and a leave to every candidate the after-state
/// does not match, as its before-state is only a guess (a leave of a record
/// a member does not hold is harmless and carries no field). A shadowed
/// event changes nothing for members that hold the newer state, and leaves
/// the others, for the same reason.
pub fn decide(before: bool, after: bool, known: Known) -> Move {
    match (known, before, after) {
        (Known::Exact, true, true) => Move::Change,
        (Known::Exact, false, true) | (Known::Stale, _, true) => Move::Enter,
        (Known::Exact, true, false) | (Known::Stale | Known::Shadowed, _, false) => Move::Leave,
        (Known::Exact, false, false) | (Known::Shadowed, _, true) => Move::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mine() -> Arc<Filter> {
        let f = json!({"field": "owner", "op": "eq", "value": "$user"});
        Arc::new(Filter::parse(&f, "rows").expect("a filter"))
    }

    fn sub(user: &str) -> SubFilter {
        SubFilter::of(Some(mine()), None, user).expect("a filter")
    }

    fn rec(owner: &str) -> Map<String, Value> {
        json!({"owner": owner})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn subscribers_with_equal_filter_user_and_mask_share_one_cohort() {
        let mut c = Cohorts::default();
        let a = c.add(Arc::from("c1"), &sub("ann"), None);
        let b = c.add(Arc::from("c2"), &sub("ann"), None);
        let other = c.add(Arc::from("c3"), &sub("bob"), None);
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_change_finds_only_the_owners_cohorts_by_index_whatever_the_number_of_users() {
        let mut c = Cohorts::default();
        for n in 0..1000 {
            c.add(Arc::from(format!("c{n}")), &sub(&format!("u{n}")), None);
        }
        let cands = c.candidates(Some(&rec("u7")), Some(&rec("u9")));
        assert_eq!(cands.len(), 2);
        let users: BTreeSet<&str> = cands
            .iter()
            .filter_map(|i| c.get(*i))
            .map(|c| &*c.user)
            .collect();
        assert_eq!(users, BTreeSet::from(["u7", "u9"]));
    }

    #[test]
    fn a_cohort_goes_when_its_last_member_leaves() {
        let mut c = Cohorts::default();
        let id = c.add(Arc::from("c1"), &sub("ann"), None);
        c.remove(id, "c1");
        assert!(c.is_empty());
        assert!(c.candidates(Some(&rec("ann")), None).is_empty());
    }

    #[test]
    fn exact_states_decide_change_enter_leave_or_nothing() {
        assert_eq!(decide(true, true, Known::Exact), Move::Change);
        assert_eq!(decide(false, true, Known::Exact), Move::Enter);
        assert_eq!(decide(true, false, Known::Exact), Move::Leave);
        assert_eq!(decide(false, false, Known::Exact), Move::Nothing);
    }

    #[test]
    fn a_stale_step_jumps_to_the_stored_state_and_a_shadowed_one_only_leaves() {
        assert_eq!(decide(true, true, Known::Stale), Move::Enter);
        assert_eq!(decide(false, false, Known::Stale), Move::Leave);
        assert_eq!(decide(true, true, Known::Shadowed), Move::Nothing);
        assert_eq!(decide(false, false, Known::Shadowed), Move::Leave);
    }
}
