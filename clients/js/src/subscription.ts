/**
 * One table's feed on the client: its recovery position and the events the
 * app gets from it (docs/protocol.md 3.1).
 *
 * The position is the id of the last event **received** from the table
 * (live, `missed_events`, or a subscribe ack's start); it only moves
 * forward, and the user's own acked changes never move it (another
 * writer's older event may still be on its way). On every (re)connect the
 * table is joined with `subscribe_to_table {lastEventId: position}`, which
 * replays what was missed before any live event. An event at or before the
 * position is a repeat and is dropped; an event that is one of the user's
 * own changes (its id is an acked `eventId`, or its `clientChangeId` is
 * still in the outbox) is not handed to the app as a `change`, though a
 * LiveTable still applies it in stream order (`event`).
 *
 * v1.3 views (docs/protocol.md 3.5): with a `viewId` the server sends only
 * the view's records, and a change that moves a record into or out of the
 * view (or, `viewId` null, out of the user's row grant) comes as
 * `record_entered_view` / `record_left_view` instead of the change. Those
 * pass through here as `view` moves: the `eventId` they name moves the
 * position like the event it replaces, and a move naming another view (a
 * frame of the view this table followed before `setView`) is dropped.
 */
import { Emitter } from "./emitter.js";
import { compareIds } from "./stream-id.js";
import { ChangeEvent, RecordState, SubscribeAck, TableGrant } from "./wire.js";

/** v1.3: a record came into the view (or the user's rows), or left it. */
export type ViewMove =
  | { kind: "enter"; viewId: string | null; record: RecordState; eventId?: string }
  | { kind: "leave"; viewId: string | null; recordId: string; eventId?: string };

export interface SubscriptionEvents {
  /** Another user's (or service's) event: once each, in stream order. */
  change: ChangeEvent;
  /** `recent_changes` of a fresh subscription: history, not new changes. */
  history: ChangeEvent[];
  /** Joined on a new connection: `recovered` says whether nothing was lost. */
  subscribed: { recovered: boolean; missedEventsCount: number };
  /** The history is gone (`history_trimmed`, `stream_reset`, ...): reload the table. */
  resync: { reason: string };
  /** Every event received, own ones flagged, in stream order (for LiveTable). */
  event: { event: ChangeEvent; own: boolean };
  /** v1.3: a record entered or left the view or the user's rows, in stream order. */
  view: ViewMove;
  /**
   * v1.3: `setView` switched the view; the table's records are read again
   * once the next `subscribed` says the new view is joined.
   */
  viewChanged: { viewId: string | undefined };
}

/** `subscribe_to_table`'s data. */
export interface JoinRequest {
  tableId: string;
  viewId?: string;
  lastEventId?: string;
  baseId?: string;
  baseLastEventId?: string;
}

/** How a subscription asks which events are the user's own. */
export interface OwnEdits {
  isPending(clientChangeId: string): boolean;
  /**
   * Whether the event is one of the user's edits still awaiting its answer:
   * an edit sent on a connection that dropped before the answer came is
   * committed under that old connection, so after a reconnect its event can
   * arrive before the resend's `duplicate` answer names its id.
   */
  isInFlight?(event: ChangeEvent): boolean;
}

export class Subscription extends Emitter<SubscriptionEvents> {
  /** The id of the last event received from the table. */
  position?: string;
  /** Whether the last join recovered every missed event (false after a resync or a first join). */
  recovered = false;
  /** Joined on the current connection. */
  active = false;
  /** The start of a join whose missed events are still arriving. */
  private joining?: string;
  private ownIds = new Set<string>();
  /** The start the ack reported with `resyncRequired`; its frame follows. */
  private resyncAnnounced = false;
  /** Resolves when the table is joined for the first time; rejects when the server refuses it. */
  readonly first: Promise<void>;
  private firstJoined!: () => void;
  private firstFailed!: (e: Error) => void;
  /** Why the server refused the subscription (then it is not joined again). */
  error?: Error;
  /** The user's grant on the table, from the last subscribe ack (v1.2). */
  grant?: TableGrant;

  constructor(
    readonly tableId: string,
    /** The view followed (v1.3: only its records are sent); changed by `setView`. */
    public viewId: string | undefined,
    private own: OwnEdits,
    /** The table's base and where its feed stands (see base-feed.ts). */
    readonly base?: { id: string; position: () => string | undefined },
  ) {
    super();
    this.first = new Promise((resolve, reject) => {
      this.firstJoined = resolve;
      this.firstFailed = reject;
    });
    this.first.catch(() => undefined); // a refusal is reported, never unhandled

  }

  /** The request that joins the table on a new connection. */
  joinRequest(): JoinRequest {
    const req: JoinRequest = { tableId: this.tableId };
    if (this.viewId !== undefined) req.viewId = this.viewId;
    if (this.position !== undefined) req.lastEventId = this.position;
    if (this.base) {
      req.baseId = this.base.id;
      const at = this.base.position();
      if (at !== undefined) req.baseLastEventId = at;
    }
    return req;
  }

  /** The subscribe ack: the subscription's start. */
  joined(ack: SubscribeAck): void {
    this.active = true;
    if (ack.access) this.grant = { access: ack.access, fields: ack.fields, ...(ack.rows ? { rows: ack.rows } : {}) };
    this.firstJoined();
    if (this.position === undefined) {
      this.position = ack.lastEventId;
      this.recovered = false;
      this.emit("subscribed", { recovered: false, missedEventsCount: 0 });
    } else if (ack.resyncRequired) {
      this.reset(ack.lastEventId, ack.resyncRequired);
      this.resyncAnnounced = true;
    } else {
      // Missed events, then connection_recovered, come next.
      this.joining = ack.lastEventId;
    }
  }

  /** `connection_recovered`: every missed event has arrived. */
  recoveredAt(lastEventId: string | undefined, missedEventsCount: number): void {
    const start = this.joining ?? lastEventId;
    this.joining = undefined;
    if (start !== undefined) this.advance(start);
    this.recovered = true;
    this.emit("subscribed", { recovered: true, missedEventsCount });
  }

  /** The `resync_required` frame. */
  resyncFrame(reason: string): void {
    if (this.resyncAnnounced) {
      this.resyncAnnounced = false;
      return;
    }
    this.reset(undefined, reason);
  }

  /** `resync_required` (or an ack saying so): a new start, the app reloads. */
  reset(start: string | undefined, reason: string): void {
    this.joining = undefined;
    this.ownIds.clear();
    if (start !== undefined) this.position = start;
    this.recovered = false;
    this.emit("resync", { reason });
  }

  /** Live or missed events, in stream order. */
  receive(events: ChangeEvent[]): void {
    for (const e of events) {
      if (typeof e?.id !== "string") continue;
      if (this.position !== undefined && compareIds(e.id, this.position) <= 0) continue;
      const own =
        this.ownIds.delete(e.id) ||
        (typeof e.clientChangeId === "string" && this.own.isPending(e.clientChangeId)) ||
        (this.own.isInFlight?.(e) ?? false);
      this.advance(e.id);
      this.emit("event", { event: e, own });
      if (!own) this.emit("change", e);
    }
  }

  /**
   * v1.3: `record_entered_view` / `record_left_view`. A move that names
   * another view is stale and dropped; one at or before the position is a
   * repeat and dropped; otherwise its `eventId` moves the position.
   */
  move(m: ViewMove): void {
    if (m.viewId !== null && m.viewId !== (this.viewId ?? null)) return;
    if (m.eventId !== undefined) {
      if (this.position !== undefined && compareIds(m.eventId, this.position) <= 0) return;
      this.advance(m.eventId);
    }
    this.emit("view", m);
  }

  /**
   * v1.3: follows another view from now on. The next join is a fresh
   * subscribe (a position in the old view says nothing of the new one's
   * records), and `viewChanged` tells the LiveTable to read them.
   */
  setView(viewId: string | undefined): void {
    this.viewId = viewId;
    this.position = undefined;
    this.joining = undefined;
    this.ownIds.clear();
    this.active = false;
    this.recovered = false;
    this.emit("viewChanged", { viewId });
  }

  /** `recent_changes`: events at or before the start. */
  history(events: ChangeEvent[]): void {
    this.emit("history", events);
  }

  /** One of the user's changes was committed as this event. */
  acked(eventId: string): void {
    if (this.position !== undefined && compareIds(eventId, this.position) <= 0) return;
    this.ownIds.add(eventId);
  }

  /** The server refused the subscription for good (`forbidden`, `bad_request`). */
  refused(error: Error): void {
    this.error = error;
    this.active = false;
    this.firstFailed(error);
  }

  /** The connection closed: joined again on the next one. */
  detach(): void {
    this.active = false;
    this.resyncAnnounced = false;
    this.joining = undefined;
  }

  private advance(id: string) {
    if (this.position === undefined || compareIds(id, this.position) > 0) this.position = id;
    // Own ids at or before the position can never arrive again.
    for (const own of this.ownIds) if (compareIds(own, this.position) <= 0) this.ownIds.delete(own);
  }
}
