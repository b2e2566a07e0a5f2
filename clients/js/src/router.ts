/**
 * The frame router: which part of the client a server frame is for, decided
 * from the frame alone. Every frame about a table names it (a change
 * event's `tableId`, a user's `tableId`, `{tableId}` of `resync_required`
 * and `connection_recovered`), so frames are routed by that and never by
 * what was joined last: a client joining several tables at once gets each
 * table's frames to that table. Base events (a `baseId` and no `tableId`,
 * docs/protocol.md 3.2) go to the base feeds. A frame that names no table
 * it should name is dropped (`unroutable`), never guessed.
 */
import { ChangeEvent, RecordState } from "./wire.js";

export type Route =
  /** Change events, grouped by table in arrival order, and base events. */
  | { kind: "events"; byTable: Map<string, ChangeEvent[]>; base: ChangeEvent[] }
  /** `recent_changes` after a fresh subscribe. */
  | { kind: "history"; tableId: string; events: ChangeEvent[] }
  | { kind: "recovered"; tableId: string; lastEventId?: string; missedEventsCount: number }
  | { kind: "resync"; tableId: string; reason: string }
  | { kind: "baseResync"; baseId: string; reason: string }
  /**
   * v1.3 `record_entered_view` / `record_left_view`: a record came into or
   * left the subscribed view (`viewId` null: the user's rows).
   */
  | { kind: "enter"; tableId: string; viewId: string | null; record: RecordState; eventId?: string }
  | { kind: "leave"; tableId: string; viewId: string | null; recordId: string; eventId?: string }
  /** `table_users`, `user_*`, `cursor_position`, `selection`. */
  | { kind: "presence"; event: string; tableId: string; data: unknown }
  /** An `error` frame without a request. */
  | { kind: "error"; code: string; message: string }
  /** Answered through the acks, or not for this client. */
  | { kind: "ignored" }
  /** A frame that should name its table and does not. */
  | { kind: "unroutable"; event: string };

const PRESENCE = new Set([
  "user_joined", "user_reconnected", "user_left", "cursor_position", "selection", "user_editing", "user_viewport",
]);
const ANSWERED = new Set(["offline_changes", "offline_sync_complete", "authenticated", "heartbeat_ack"]);

function obj(data: unknown): { [k: string]: unknown } {
  return typeof data === "object" && data !== null && !Array.isArray(data) ? (data as { [k: string]: unknown }) : {};
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** Change events by table, in order; base events apart; anything else dropped. */
export function groupEvents(events: unknown[]): { byTable: Map<string, ChangeEvent[]>; base: ChangeEvent[] } {
  const byTable = new Map<string, ChangeEvent[]>();
  const base: ChangeEvent[] = [];
  for (const item of events) {
    const e = obj(item) as unknown as ChangeEvent;
    if (typeof e.id !== "string") continue;
    const tableId = str(e.tableId);
    if (tableId === undefined) {
      if (typeof e.baseId === "string") base.push(e);
      continue;
    }
    const list = byTable.get(tableId);
    if (list) list.push(e);
    else byTable.set(tableId, [e]);
  }
  return { byTable, base };
}

/** Where the frame `[event, data]` goes. */
export function routeFrame(event: string, data: unknown): Route {
  switch (event) {
    case "record_change":
      return { kind: "events", ...groupEvents([data]) };
    case "batch_changes":
    case "missed_events":
      return { kind: "events", ...groupEvents(Array.isArray(data) ? data : []) };
    case "recent_changes": {
      const { byTable } = groupEvents(Array.isArray(data) ? data : []);
      const [only, ...more] = [...byTable];
      // One table's latest events: a frame mixing tables is not one.
      if (!only || more.length > 0) return { kind: "unroutable", event };
      return { kind: "history", tableId: only[0], events: only[1] };
    }
    case "connection_recovered": {
      const d = obj(data);
      const tableId = str(d.tableId);
      if (tableId === undefined) return { kind: "unroutable", event };
      const n = d.missedEventsCount;
      return { kind: "recovered", tableId, lastEventId: str(d.lastEventId), missedEventsCount: typeof n === "number" ? n : 0 };
    }
    case "resync_required": {
      const d = obj(data);
      const reason = str(d.reason) ?? "resync_required";
      const tableId = str(d.tableId);
      if (tableId !== undefined) return { kind: "resync", tableId, reason };
      const baseId = str(d.baseId);
      if (baseId !== undefined) return { kind: "baseResync", baseId, reason };
      return { kind: "unroutable", event };
    }
    case "table_users": {
      const users = Array.isArray(data) ? data : [];
      const tableId = str(obj(users[0]).tableId);
      if (tableId === undefined) return { kind: "unroutable", event };
      return { kind: "presence", event, tableId, data: users };
    }
    case "record_entered_view":
    case "record_left_view":
      return viewMove(event, obj(data));
    case "error": {
      const d = obj(data);
      return { kind: "error", code: str(d.code) ?? "internal", message: str(d.message) ?? "" };
    }
  }
  if (PRESENCE.has(event)) {
    const tableId = str(obj(data).tableId);
    if (tableId === undefined) return { kind: "unroutable", event };
    return { kind: "presence", event, tableId, data };
  }
  if (ANSWERED.has(event)) return { kind: "ignored" };
  return { kind: "ignored" };
}

/**
 * A `record_entered_view` / `record_left_view` frame. One without a table is
 * unroutable; one without a well-formed record (or record id) is dropped,
 * since applying half a state would show values the server never held.
 */
function viewMove(event: string, d: { [k: string]: unknown }): Route {
  const tableId = str(d.tableId);
  if (tableId === undefined) return { kind: "unroutable", event };
  const viewId = str(d.viewId) ?? null;
  const eventId = str(d.eventId);
  if (event === "record_left_view") {
    const recordId = str(d.recordId);
    if (recordId === undefined) return { kind: "ignored" };
    return { kind: "leave", tableId, viewId, recordId, ...(eventId ? { eventId } : {}) };
  }
  const r = obj(d.record);
  const recordId = str(r.recordId);
  if (recordId === undefined || typeof r.version !== "number") return { kind: "ignored" };
  const record: RecordState = {
    recordId, version: r.version, deleted: r.deleted === true, fields: obj(r.fields) as RecordState["fields"],
  };
  return { kind: "enter", tableId, viewId, record, ...(eventId ? { eventId } : {}) };
}
