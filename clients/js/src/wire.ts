/**
 * The wire types of the rtsync protocol (docs/protocol.md sections 3 and 4), as
 * they arrive: optional keys may be absent or `null`.
 */

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface FieldChange {
  fieldId: string;
  /**
   * The value before the change. (v1.3) In events from the server it is the
   * value the store held, never the writer's claim; absent when the field
   * had none.
   */
  oldValue?: Json;
  /** (v1.3) The field's version before the change (0: it had none). */
  oldVersion?: number;
  /** `null` or absent: the field is cleared (the record state then has no such field). */
  newValue?: Json;
}

export interface ChangeEvent {
  /** The Redis stream entry id (`"1732400000000-0"`): orders a table's events. */
  id: string;
  type: "create" | "update" | "delete" | string;
  entityType: "record" | "field" | "table" | "view" | "base" | string;
  entityId: string;
  tableId?: string | null;
  baseId?: string | null;
  userId: string;
  timestamp: number;
  changes?: FieldChange[] | null;
  metadata?: { [k: string]: Json } | null;
  version: number;
  clientChangeId?: string | null;
}

export type CommitStatus = "applied" | "merged" | "overwritten" | "rejected" | "duplicate";

/** A record's state: what `load_records` returns and what a rejection carries. */
export interface RecordState {
  recordId: string;
  version: number;
  deleted: boolean;
  fields: { [fieldId: string]: Json };
}

/** The answer to `undo` / `redo` (protocol 3.3). */
export interface UndoResult {
  /** `applied`; `partial`: some fields were left (someone changed them since); `conflict`: all were; `nothing`: the stack is empty. */
  status: "applied" | "partial" | "conflict" | "nothing" | "duplicate";
  originalStatus?: string;
  /** The step undone (its first event's id). */
  undone?: string;
  /** The step redone. */
  redone?: string;
  /** The last event written, and its record's new version. */
  eventId?: string;
  version?: number;
  /** One event per record written. */
  events?: { recordId: string; eventId: string; version: number; type: "update" | "delete" | "create" }[];
  /** What was left as it is: `by` changed it since (both left out for a field the user may not read). */
  skipped?: UndoSkip[];
  truncated?: boolean;
}

export interface UndoSkip {
  recordId: string;
  fieldId?: string;
  reason: "changed" | "deleted" | "exists" | "too_large";
  theirValue?: Json;
  by?: string;
}

export interface CommitResult {
  status: CommitStatus;
  /** For a `duplicate`: the status of the first answer. */
  originalStatus?: CommitStatus;
  eventId?: string;
  version: number;
  conflicts?: { fieldId: string; theirValue: Json }[];
  current?: { version: number; fields: { [fieldId: string]: Json }; deleted?: boolean };
  reason?: string;
  clientChangeId?: string;
  entityId?: string;
  tableId?: string;
  /**
   * Set when the server refused the request itself (`forbidden`,
   * `bad_request`, `payload_too_large`, ...): the edit was not written and
   * `status` is `"rejected"`.
   */
  error?: ErrorBody;
}

export interface ErrorBody {
  code: string;
  message: string;
  event?: string;
}

export interface Cursor {
  recordId: string;
  fieldId: string;
  x?: number | null;
  y?: number | null;
}

export interface Selection {
  startRecordId: string;
  startFieldId: string;
  endRecordId: string;
  endFieldId: string;
}

export interface UserPresence {
  userId: string;
  userName: string;
  avatarUrl?: string | null;
  tableId: string;
  viewId?: string | null;
  cursor?: Cursor | null;
  selection?: Selection | null;
  lastSeen: number;
  color: string;
  /** v1.3: the cell the user edits now, if any. */
  editing?: { recordId: string; fieldId: string } | null;
  /** v1.3: the rows the user sees, if they said. */
  viewport?: Viewport | null;
}

/** v1.3: the rows a user sees: listed ids (at most 500) or a range in record-id order. */
export type Viewport =
  | { viewId?: string; recordIds: string[] }
  | { viewId?: string; firstRecordId: string; lastRecordId: string };

/** v1.3: another user started or stopped editing a cell. */
export interface UserEditing {
  userId: string;
  color: string;
  tableId: string;
  recordId: string;
  fieldId: string;
  state: "start" | "stop";
}

export interface SubscribeAck {
  tableId: string;
  lastEventId: string;
  color: string;
  missedEventsCount?: number;
  resyncRequired?: string;
  /** The base stream's start, when the subscribe named a `baseId` (v1.2). */
  baseLastEventId?: string;
  /** The user's access to the table (v1.2). */
  access?: "r" | "rw";
  /** Field permissions, when some differ from `access` (v1.2, section 2.1). */
  fields?: { [fieldId: string]: FieldPermission };
  /** v1.3: the row grant's filter (section 2.2), when the server reports it. */
  rows?: Filter | null;
}

/** What a user may do with one field (docs/protocol.md 2.1). */
export type FieldPermission = "none" | "r" | "rw";

/** The effective grant a subscribe ack reports. */
export interface TableGrant {
  access: "r" | "rw";
  fields?: { [fieldId: string]: FieldPermission };
  /** v1.3: only the records matching this filter are visible (section 2.2). */
  rows?: Filter | null;
}

/**
 * v1.3 (section 3.5): a view's or a row grant's filter. `"$user"` as a
 * value is the subscriber's id; `in` takes at most 100 values.
 */
export type Filter =
  | { and: Filter[] }
  | { or: Filter[] }
  | { not: Filter }
  | {
    field: string;
    op: "eq" | "neq" | "lt" | "lte" | "gt" | "gte" | "in" | "contains" | "empty" | "notEmpty";
    value?: Json;
  };

/**
 * v1.3: a change brought a record into the subscribed view (or, with
 * `viewId` null, into the user's rows): its masked state.
 */
export interface RecordEnteredView {
  tableId: string;
  viewId: string | null;
  record: RecordState;
  /** The stream event that brought it in, when the server names it. */
  eventId?: string | null;
}

/** v1.3: a change took a record out of the subscribed view (or, with `viewId` null, out of the user's rows). */
export interface RecordLeftView {
  tableId: string;
  viewId: string | null;
  recordId: string;
  /** The stream event that took it out. */
  eventId?: string | null;
}

/** A field's permission under a grant: its own, else `"*"`, else the access. */
export function fieldPermission(grant: TableGrant | undefined, fieldId: string): FieldPermission {
  if (!grant) return "rw"; // not joined yet: the server decides
  const p = grant.fields?.[fieldId] ?? grant.fields?.["*"] ?? grant.access;
  return grant.access === "r" && p === "rw" ? "r" : p;
}

export interface LoadRecordsAck {
  records: RecordState[];
  next?: string | null;
  asOf: string;
}

export interface Authenticated {
  userId: string;
  connectionId: string;
  serverTime: number;
}

/** WebSocket close codes of docs/protocol.md section 5. */
export const CloseCode = {
  Unauthenticated: 4401,
  AuthTimeout: 4408,
  FrameTooLarge: 4413,
  RateLimited: 4429,
  ShuttingDown: 4500,
  SlowConsumer: 4503,
} as const;

/** Whether a commit result means the edit was not written. */
export function isRejected(r: CommitResult): boolean {
  return r.status === "rejected" || (r.status === "duplicate" && r.originalStatus === "rejected");
}

/** Whether a commit result wrote the edit into the stream (now or before). */
export function isCommitted(r: CommitResult): boolean {
  return !isRejected(r) && typeof r.eventId === "string";
}

/** (v1.3) The options of `record_history`: a page older than `before`. */
export interface HistoryOptions {
  /** The previous page's `next`: only changes older than it. */
  before?: string;
  /** Most events in the page, 1..=1000 (server default 100). */
  limit?: number;
}

/** (v1.3) A page of a record's history: its changes, newest first. */
export interface HistoryPage {
  events: ChangeEvent[];
  /** Pass as `before` for the next (older) page; absent on the last. */
  next?: string | null;
}
