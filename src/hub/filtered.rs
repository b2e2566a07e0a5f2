//! The live fan-out to filtered subscribers (row grants and views,
//! docs/protocol.md 2.2 and 3.5), beside the hub's unfiltered one, which
//! it leaves untouched: a subscriber without a filter never costs a read
//! or an evaluation.
//!
//! Data flow: the tailer read the touched records' states after the batch
//! (`EventHandler::deliver_with_states`); `cohort::steps` turns them and
//! the events' old/new values into each event's before/after states; for
//! each event the candidate cohorts (by index, `Cohorts::candidates`)
//! evaluate their filter on both and `cohort::decide` picks the change
//! (masked), `record_entered_view`, `record_left_view` or nothing. A frame
//! is built once per cohort and framing and pushed to every member.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::TableInner;
use crate::cohort::steps::{omits_old_values, steps, undo, Fields, Step};
use crate::cohort::{decide, Cohort, Known, Move};
use crate::grant::masking;
use crate::outbox::Frame;
use crate::protocol::event::ChangeEvent;
use crate::protocol::framing::{Framing, SLOTS};
use crate::protocol::ServerEvent;
use crate::store::records::RecordState;

/// Fans `events` (after the table's cursor, in stream order) out to the
/// table's cohorts.
pub(super) fn fan_out(
    inner: &mut TableInner,
    table: &str,
    events: &[ChangeEvent],
    states: &HashMap<String, RecordState>,
) {
    if inner.cohorts.is_empty() {
        return;
    }
    let steps = steps(events, states);
    let (mut evaluations, mut moves) = (0u64, 0u64);
    for (e, step) in events.iter().zip(steps) {
        let stored = states.contains_key(&e.entity_id);
        let step = step.map(|s| inner.jumps.known(e, s, stored));
        let ids = match &step {
            None => inner.cohorts.ids(),
            // Old values left out (a change too large for them): the
            // before-state is a guess, so every cohort is a candidate and
            // gets the state (enter) or a leave.
            Some((_, known)) if *known == Known::Exact && omits_old_values(e) => {
                inner.cohorts.ids()
            }
            Some((s, _)) => inner
                .cohorts
                .candidates(s.before.as_ref(), s.after.as_ref()),
        };
        let step = step.map(|(s, known)| match known {
            Known::Exact if omits_old_values(e) => (s, Known::Stale),
            _ => (s, known),
        });
        for id in ids {
            let Some(c) = inner.cohorts.get(id) else {
                continue;
            };
            let mv = match &step {
                // Not about a record (a field, the table, a view): as is.
                None => Move::Change,
                Some((s, known)) => {
                    evaluations += 2;
                    decide(holds(c, &s.before), holds(c, &s.after), *known)
                }
            };
            if mv == Move::Nothing {
                continue;
            }
            moves += u64::from(mv != Move::Change);
            let mut frames: [Option<Option<Frame>>; SLOTS] = Default::default();
            for conn in &c.members {
                // The writer had its ack for the change itself; it still
                // learns that its record entered or left its view.
                if mv == Move::Change && e.origin.as_deref() == Some(&**conn) {
                    continue;
                }
                let Some(sub) = inner.subscribers.get_mut(conn) else {
                    continue;
                };
                let framing = sub.outbox.framing();
                let frame = frames[framing.slot()]
                    .get_or_insert_with(|| {
                        build(mv, c, table, e, step.as_ref().map(|s| &s.0), framing)
                    })
                    .clone();
                if let Some(bytes) = frame {
                    sub.push(bytes, Some(e.timestamp));
                }
            }
        }
    }
    crate::metrics::filtered_fanout(evaluations, moves);
}

/// Records whose filtered members were jumped to a newer state than their
/// event's (a stale step): record id → (version, state). Kept in stream
/// order under the table's lock; an entry goes when the event of its
/// version is fanned out. Bounded: past [`MAX_JUMPS`] the oldest half is
/// forgotten (their later events are then judged as if not jumped).
#[derive(Default)]
pub(super) struct Jumps {
    by_record: HashMap<String, (u64, Fields)>,
    order: std::collections::VecDeque<String>,
}

/// Jumped records a table keeps (each lives until its version's event is
/// fanned out, normally within a batch or two).
const MAX_JUMPS: usize = 10_000;

impl Jumps {
    /// How the members know `e`'s record, and the states to judge it on.
    /// `stored`: whether `s` was walked from the record's stored state.
    fn known(&mut self, e: &ChangeEvent, s: Step, stored: bool) -> (Step, Known) {
        if let Some((version, state)) = self.by_record.get(&e.entity_id) {
            if e.version <= *version {
                let step = Step {
                    before: undo(state.clone(), e),
                    after: state.clone(),
                    version: *version,
                    exact: false,
                };
                if e.version == *version {
                    self.by_record.remove(&e.entity_id);
                }
                return (step, Known::Shadowed);
            }
            self.by_record.remove(&e.entity_id);
        }
        if !stored {
            // No state was read (a failed read, or no state at all): the
            // event's own values cannot say whether the record is in a
            // filter (a field it does not carry may hide it), so no value
            // of it goes out: its candidates are told it left.
            crate::metrics::rows_filtered(0, 1);
            let step = Step { after: None, ..s };
            return (step, Known::Stale);
        }
        if s.exact {
            return (s, Known::Exact);
        }
        if self.order.len() >= MAX_JUMPS {
            let live = &self.by_record;
            self.order.retain(|r| live.contains_key(r));
        }
        if self.order.len() >= MAX_JUMPS {
            tracing::warn!(
                kept = MAX_JUMPS,
                "too many jumped records; forgetting the oldest"
            );
            crate::metrics::filter_state_read_failed();
            while self.order.len() >= MAX_JUMPS / 2 {
                if let Some(old) = self.order.pop_front() {
                    self.by_record.remove(&old);
                }
            }
        }
        self.order.push_back(e.entity_id.clone());
        self.by_record
            .insert(e.entity_id.clone(), (s.version, s.after.clone()));
        (s, Known::Stale)
    }
}

fn holds(c: &Cohort, state: &Option<Map<String, Value>>) -> bool {
    state.as_ref().is_some_and(|f| c.filter.matches(f, &c.user))
}

/// The frame of `mv` for cohort `c` in `framing`; `None` when the cohort's
/// mask hides the event.
fn build(
    mv: Move,
    c: &Cohort,
    table: &str,
    e: &ChangeEvent,
    step: Option<&Step>,
    framing: &dyn Framing,
) -> Option<Frame> {
    let data = match mv {
        Move::Change => {
            let masked = c.mask.as_deref().map(|m| masking::event(e, m));
            let event = match &masked {
                Some(m) => m.event()?,
                None => e,
            };
            let bytes = framing.event_frame(ServerEvent::RecordChange, event);
            return Some(Frame::shared(bytes));
        }
        Move::Enter => {
            let step = step?;
            let mut fields = step.after.clone().unwrap_or_default();
            if let Some(m) = c.mask.as_deref() {
                masking::fields(&mut fields, m);
            }
            json!({"tableId": table, "viewId": c.view_id.as_deref(),
                "record": {"recordId": e.entity_id, "version": step.version,
                    "deleted": false, "fields": fields},
                "eventId": e.id})
        }
        Move::Leave => json!({"tableId": table, "viewId": c.view_id.as_deref(),
            "recordId": e.entity_id, "eventId": e.id}),
        Move::Nothing => return None,
    };
    let event = match mv {
        Move::Enter => ServerEvent::RecordEnteredView,
        _ => ServerEvent::RecordLeftView,
    };
    Some(Frame::shared(framing.frame(event, &data, None)))
}
