/**
 * The client facade: one connection (`Transport`), the outbox, the table
 * subscriptions, presence and live tables, wired together.
 *
 * On every authenticated connection it joins each subscribed table again
 * from its position (missed events first), then lets the outbox send. Frames
 * are routed by table to their `Subscription` (events) and to `Presence`.
 * An edit goes into the outbox at once, connected or not; its promise
 * resolves with the server's answer.
 */
import { BaseFeeds } from "./base-feed.js";
import { Emitter } from "./emitter.js";
import { isTransient, RtsyncError } from "./errors.js";
import { LiveTable, LiveTableOptions } from "./live-table.js";
import { NewEdit, Outbox, Settled } from "./outbox.js";
import { Presence } from "./presence.js";
import { LatestWins } from "./latest-wins.js";
import { EditingHandle, OwnEditing } from "./editing.js";
import type { EditingCell } from "./presence.js";
import { Route, routeFrame } from "./router.js";
import { defaultStorage, OutboxStorage, QueuedEdit } from "./storage.js";
import { Subscription } from "./subscription.js";
import { jwtSubject } from "./token.js";
import { DevUser, Status, StatusChange, Transport, WebSocketClass } from "./transport.js";
import {
  ChangeEvent, CommitResult, Cursor, FieldChange, isCommitted, Json, RecordState, Selection, SubscribeAck, UserEditing,
  UserPresence, Viewport,
} from "./wire.js";

export interface ClientOptions {
  /** The sidecar's WebSocket URL, e.g. `wss://app.example.com/rtsync/ws`. */
  url: string;
  /** A JWT. Prefer `getToken` for tokens that expire. */
  token?: string;
  /** Called for a token at every connect, and once more after a refusal. */
  getToken?: () => string | Promise<string>;
  /** Against a development sidecar (`RTS_AUTH=none`) only: who to be. */
  devUser?: DevUser;
  /** `msgpack` (default) or `json`. */
  encoding?: "msgpack" | "json";
  /** Where queued edits are kept: IndexedDB in browsers, memory elsewhere by default. */
  storage?: OutboxStorage;
  /** Names the default storage (default: the URL and the user of `devUser` or the token). */
  storageKey?: string;
  /** Most edits per `sync_offline_changes`: the server's `RTS_MAX_BATCH` (default 1000). */
  maxBatch?: number;
  /** Most bytes (as JSON) of edits per request (default 256 KiB, under `RTS_MAX_FRAME_BYTES`). */
  maxChunkBytes?: number;
  /** Reconnect backoff: first cap and largest cap, in ms (defaults 250 and 10000). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** A connection must stay up this long to reset the backoff (default 5000). */
  stableAfterMs?: number;
  /** Retry backoff of edits the server could not take yet (defaults 200 and 5000 ms). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** How long a request waits for its answer (default 15000 ms). */
  requestTimeoutMs?: number;
  /** Most cursor frames per second (default 20; the latest position wins). */
  cursorsPerSecond?: number;
  /**
   * How often a started editing indicator is renewed (default 2000 ms):
   * under the server's `RTS_EDITING_TTL_MS` (5000), so it never lapses
   * while the user edits.
   */
  editingRenewMs?: number;
  /** A WebSocket class where there is no global one: `import WebSocket from "ws"`. */
  WebSocket?: WebSocketClass;
}

/** How a table is followed: `subscribe` and `table` options. */
export interface FollowOptions {
  /** v1.3: the view to follow (only its records are sent); alias of `viewId`. */
  view?: string;
  viewId?: string;
  baseId?: string;
  relay?: "all" | "viewport";
}

export interface ChangeOptions {
  type?: "create" | "update" | "delete";
  /** The record version the edit is based on; without it, last write wins. */
  version?: number;
  baseId?: string;
  /** `"reject"` turns a conflicting write into a rejection (rolled back). */
  onConflict?: "reject";
  metadata?: { [k: string]: Json };
}

export interface ClientEvents {
  status: StatusChange;
  /** Another user's event on a subscribed table: once each, in stream order. */
  change: ChangeEvent;
  /** `recent_changes` after a fresh subscribe: the table's latest events. */
  history: { tableId: string; events: ChangeEvent[] };
  subscribed: { tableId: string; recovered: boolean; missedEventsCount: number };
  /** A table's history is gone: reload it (LiveTable does it by itself). */
  resync: { tableId: string; reason: string };
  /** A base event (a base renamed, ...) of a followed table's base: once each, in order. */
  base: { baseId: string; event: ChangeEvent };
  /** A base's history is gone: reload what the app shows of the base. */
  baseResync: { baseId: string; reason: string };
  users: { tableId: string; users: UserPresence[] };
  joined: UserPresence;
  left: { userId: string; tableId: string };
  cursor: { userId: string; tableId: string; cursor: Cursor };
  selection: { userId: string; tableId: string; selection: Selection };
  /** v1.3: another user started or stopped editing a cell. */
  editing: UserEditing;
  /** v1.3: a record came into a followed view (or, `viewId` null, into the user's rows). */
  recordEntered: { tableId: string; viewId: string | null; record: RecordState };
  /** v1.3: a record left a followed view (or the user's rows): drop it. */
  recordLeft: { tableId: string; viewId: string | null; recordId: string };
  /** v1.3: another user's viewport (the rows they see). */
  viewport: { userId: string; tableId: string; viewport: Viewport };
  /** An edit has its final answer. */
  settled: Settled;
  /** An edit was refused: roll it back (LiveTable does it by itself). */
  rollback: Settled;
  /** How many edits await the server. */
  pending: { count: number };
  /** An `error` frame without a request, or a storage failure. */
  error: { code: string; message: string };
}

export class RtsyncClient extends Emitter<ClientEvents> {
  readonly outbox: Outbox;
  private transport: Transport;
  private subs = new Map<string, Subscription>();
  private tables = new Map<string, LiveTable>();
  private presence = new Presence();
  private bases = new BaseFeeds();
  private onlineWaiters: (() => void)[] = [];
  private cursors: LatestWins<{ tableId: string; cursor: Cursor }>;
  private own: OwnEditing;
  /** v1.3: per table, `relay` of its subscribe and the last viewport sent. */
  private relays = new Map<string, "all" | "viewport">();
  private viewports = new Map<string, Viewport>();

  constructor(private options: ClientOptions) {
    super();
    this.cursors = new LatestWins(options.cursorsPerSecond ?? 20, (c) => this.transport.send("cursor_position", c));
    this.own = new OwnEditing((event, data) => this.transport.send(event, data), options.editingRenewMs ?? 2000);
    this.transport = new Transport({
      url: options.url,
      token: options.token,
      getToken: options.getToken,
      devUser: options.devUser,
      encoding: options.encoding ?? "msgpack",
      backoffBaseMs: options.backoffBaseMs ?? 250,
      backoffMaxMs: options.backoffMaxMs ?? 10_000,
      stableAfterMs: options.stableAfterMs ?? 5_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 15_000,
      WebSocket: options.WebSocket,
    });
    const storage = options.storage ?? defaultStorage(`rtsync-outbox:${options.storageKey ?? storageKey(options)}`);
    this.outbox = new Outbox(this.transport, storage, {
      maxBatch: options.maxBatch ?? 1000,
      maxChunkBytes: options.maxChunkBytes ?? 256 * 1024,
      retryBaseMs: options.retryBaseMs ?? 200,
      retryMaxMs: options.retryMaxMs ?? 5_000,
    });
    this.transport.on("status", (s) => {
      if (s.status !== "online") for (const sub of this.subs.values()) sub.detach();
      this.emit("status", s);
    });
    this.transport.on("open", () => void this.resume());
    this.transport.on("frame", ({ event, data }) => this.onFrame(event, data));
    this.bases.on("base", (b) => this.emit("base", b));
    this.bases.on("resync", (r) => this.emit("baseResync", r));
    this.outbox.on("settled", (s) => {
      if (isCommitted(s.result) && s.result.eventId) this.subs.get(s.edit.tableId)?.acked(s.result.eventId);
      this.emit("settled", s);
    });
    this.outbox.on("rollback", (s) => this.emit("rollback", s));
    this.outbox.on("pending", (p) => this.emit("pending", p));
    this.outbox.on("storageError", ({ error }) => this.emit("error", { code: "storage", message: String(error) }));
    void this.outbox.start();
  }

  get status(): Status {
    return this.transport.status;
  }

  /** The authenticated user's id (after the first connect). */
  get userId(): string | undefined {
    return this.transport.userId;
  }

  /**
   * Connects, and keeps reconnecting until `disconnect`. Resolves once
   * online; rejects when the server refuses the credentials.
   */
  connect(): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      if (this.status === "online") return resolve();
      const off = this.on("status", (s) => {
        if (s.status === "online") {
          off();
          resolve();
        } else if (s.status === "unauthorized" || (s.status === "offline" && s.error)) {
          off();
          reject(s.error ?? new RtsyncError("unauthenticated", "refused"));
        }
      });
    });
    this.transport.start();
    return done;
  }

  /** Closes the connection; edits queue until `connect`. */
  disconnect(): void {
    this.transport.stop("disconnect");
  }

  /** Goes offline (edits queue) or back online. */
  setOffline(offline: boolean): void {
    if (offline) this.transport.stop("offline");
    else this.transport.start();
  }

  /** Drops the socket as a network failure would; the client reconnects. */
  dropConnection(): void {
    this.transport.dropConnection();
  }

  /** Resolves the next time the client is online. */
  whenOnline(): Promise<void> {
    if (this.status === "online") return Promise.resolve();
    return new Promise((r) => this.onlineWaiters.push(r));
  }

  /** Sends a request and resolves with its ack. */
  request<T = unknown>(event: string, data: unknown): Promise<T> {
    return this.transport.request<T>(event, data);
  }

  /**
   * Follows a table: its changes, presence and recovery. Resolves once
   * joined (which waits for the connection).
   */
  async subscribe(tableId: string, options: FollowOptions = {}): Promise<Subscription> {
    if (options.relay) this.relays.set(tableId, options.relay);
    const sub = this.follow(tableId, options.view ?? options.viewId, options.baseId);
    await sub.first;
    return sub;
  }

  async unsubscribe(tableId: string): Promise<void> {
    this.tables.get(tableId)?.close();
    this.tables.delete(tableId);
    this.subs.delete(tableId);
    this.presence.forget(tableId);
    this.own.forget(tableId);
    this.relays.delete(tableId);
    this.viewports.delete(tableId);
    if (this.status === "online") await this.transport.request("unsubscribe_from_table", { tableId });
  }

  /** The live table: records loaded, kept current, with the user's edits on top. */
  table(tableId: string, options: LiveTableOptions & FollowOptions = {}): LiveTable {
    let t = this.tables.get(tableId);
    if (!t) {
      if (options.relay) this.relays.set(tableId, options.relay);
      const sub = this.follow(tableId, options.view ?? options.viewId, options.baseId);
      t = new LiveTable(tableId, this, sub, options);
      this.tables.set(tableId, t);
    }
    return t;
  }

  /**
   * v1.3: follows another view of a followed table (`undefined`: the whole
   * table). The table is left and joined again fresh with the new `viewId`;
   * its LiveTable then reads the new view's records and drops the ones
   * outside it, without emptying the grid in between.
   */
  async setView(tableId: string, viewId: string | undefined): Promise<void> {
    const sub = this.subs.get(tableId);
    if (!sub || sub.viewId === viewId) return;
    if (sub.active && this.status === "online") {
      // Left first, so no frame of the old view arrives after the switch.
      try {
        await this.transport.request("unsubscribe_from_table", { tableId });
      } catch (e) {
        if (!isTransient(e)) throw e;
      }
    }
    sub.setView(viewId);
    // Joined fresh now, or on the next connection.
    if (this.status === "online") await this.join(sub);
  }

  /**
   * Changes fields of a record. Resolves with the server's CommitResult,
   * however long the client is offline; never rejects. `status: "rejected"`
   * (with `error` when the request itself was refused) also fires `rollback`.
   */
  change(tableId: string, recordId: string, changes: FieldChange[], options: ChangeOptions = {}): Promise<CommitResult> {
    const metadata = options.onConflict ? { ...options.metadata, onConflict: options.onConflict } : options.metadata;
    const edit: NewEdit = {
      tableId, recordId, type: options.type ?? "update", changes, metadata, baseId: options.baseId, version: options.version,
    };
    return this.outbox.add(edit).result;
  }

  /** Present users of a table. */
  users(tableId: string): UserPresence[] {
    return this.presence.users(tableId);
  }

  /** Sends the cursor, at most `cursorsPerSecond` times a second (the latest wins). */
  moveCursor(tableId: string, cursor: Cursor): void {
    this.cursors.push({ tableId, cursor });
  }

  select(tableId: string, selection: Selection): void {
    this.transport.send("selection", { tableId, selection });
  }

  /** v1.3: who edits which cell of a table now (other users). */
  editing(tableId: string): EditingCell[] {
    return this.presence.editing(tableId).filter((e) => e.userId !== this.userId);
  }

  /**
   * v1.3: tells the table's other users that this user edits a cell, renewed
   * every `editingRenewMs` until `stop` (or `stopEditing`, or another cell
   * is started). Announced again after a reconnect.
   */
  startEditing(tableId: string, recordId: string, fieldId: string): EditingHandle {
    return this.own.start(tableId, recordId, fieldId);
  }

  /** v1.3: ends this user's editing indicator (of that cell only, when named). */
  stopEditing(tableId: string, recordId?: string, fieldId?: string): void {
    this.own.stop(tableId, recordId, fieldId);
  }

  /**
   * v1.3: the rows this user sees (at most 500 `recordIds`, or a range in
   * record-id order). Others see it in `users()`; with `relay: "viewport"`
   * the server sends this client only the cursors and editing indicators
   * on those rows. Sent again after a reconnect.
   */
  viewport(tableId: string, viewport: Viewport): void {
    this.viewports.set(tableId, viewport);
    this.transport.send("viewport", { tableId, ...viewport });
  }

  heartbeat(tableId: string): void {
    this.transport.send("heartbeat", { tableId });
  }

  private follow(tableId: string, viewId?: string, baseId?: string): Subscription {
    let sub = this.subs.get(tableId);
    if (sub) return sub;
    const base = baseId === undefined ? undefined : { id: baseId, position: () => this.bases.position(baseId) };
    const own = {
      isPending: (id: string) => this.outbox.has(id),
      isInFlight: (e: ChangeEvent) => e.userId === this.userId && this.outbox.pending().some((q) => isEditOf(q, e)),
    };
    sub = new Subscription(tableId, viewId, own, base);
    this.subs.set(tableId, sub);
    const s = sub;
    s.on("change", (e) => this.emit("change", e));
    s.on("history", (events) => this.emit("history", { tableId, events }));
    s.on("resync", ({ reason }) => this.emit("resync", { tableId, reason }));
    s.on("subscribed", (r) => this.emit("subscribed", { tableId, ...r }));
    s.on("view", (m) => {
      if (m.kind === "enter") this.emit("recordEntered", { tableId, viewId: m.viewId, record: m.record });
      else this.emit("recordLeft", { tableId, viewId: m.viewId, recordId: m.recordId });
    });
    if (this.status === "online") void this.join(s);
    return s;
  }

  /** On a new connection: every table joined again, then the outbox sends. */
  private async resume() {
    for (const r of this.onlineWaiters.splice(0)) r();
    this.outbox.kick();
    for (const sub of [...this.subs.values()]) await this.join(sub);
  }

  private async join(sub: Subscription) {
    if (sub.active || this.subs.get(sub.tableId) !== sub) return;
    try {
      const relay = this.relays.get(sub.tableId);
      const req = relay ? { ...sub.joinRequest(), relay } : sub.joinRequest();
      await this.transport.request<SubscribeAck>("subscribe_to_table", req, (ack) => {
        if (sub.base) this.bases.joined(sub.base.id, ack.baseLastEventId);
        sub.joined(ack);
      });
      // The server forgot this connection's viewport and editing cell.
      const viewport = this.viewports.get(sub.tableId);
      if (viewport) this.transport.send("viewport", { tableId: sub.tableId, ...viewport });
      this.own.resend(sub.tableId);
    } catch (e) {
      if (isTransient(e)) return; // joined again on the next connection
      const err = e instanceof RtsyncError ? e : new RtsyncError("internal", String(e));
      // Refused for good: not joined again, and subscribe() rejects.
      this.subs.delete(sub.tableId);
      this.tables.get(sub.tableId)?.close();
      this.tables.delete(sub.tableId);
      sub.refused(err);
      this.emit("error", { code: err.code, message: `subscribe ${sub.tableId}: ${err.message}` });
    }
  }

  private onFrame(event: string, data: unknown) {
    const r = routeFrame(event, data);
    switch (r.kind) {
      case "events":
        for (const e of r.base) this.bases.receive(e);
        for (const [tableId, list] of r.byTable) this.subs.get(tableId)?.receive(list);
        return;
      case "history":
        this.subs.get(r.tableId)?.history(r.events);
        return;
      case "recovered":
        this.subs.get(r.tableId)?.recoveredAt(r.lastEventId, r.missedEventsCount);
        return;
      case "resync":
        this.subs.get(r.tableId)?.resyncFrame(r.reason);
        return;
      case "enter":
      case "leave":
        this.onMove(r);
        return;
      case "baseResync":
        this.bases.resync(r.baseId, r.reason);
        return;
      case "error":
        this.emit("error", { code: r.code, message: r.message });
        return;
      case "presence":
        this.onPresence(r.event, r.data);
        return;
      case "unroutable":
        this.emit("error", { code: "bad_frame", message: `${r.event} names no table` });
        return;
      case "ignored":
        return;
    }
  }

  /** v1.3: a record entered or left a followed table's view (or the user's rows). */
  private onMove(r: Extract<Route, { kind: "enter" | "leave" }>) {
    const at = r.eventId ? { eventId: r.eventId } : {};
    if (r.kind === "enter") this.subs.get(r.tableId)?.move({ kind: "enter", viewId: r.viewId, record: r.record, ...at });
    else this.subs.get(r.tableId)?.move({ kind: "leave", viewId: r.viewId, recordId: r.recordId, ...at });
  }

  private onPresence(event: string, data: unknown) {
    const p = this.presence.apply(event, data);
    if (!p) return;
    switch (p.kind) {
      case "users":
        this.emit("users", { tableId: p.tableId, users: p.users });
        break;
      case "joined":
        this.emit("joined", p.user);
        break;
      case "left":
        this.emit("left", { userId: p.userId, tableId: p.tableId });
        break;
      case "cursor":
        this.emit("cursor", { userId: p.userId, tableId: p.tableId, cursor: p.cursor });
        break;
      case "selection":
        this.emit("selection", { userId: p.userId, tableId: p.tableId, selection: p.selection });
        break;
      case "editing":
        this.emit("editing", p.editing);
        this.tables.get(p.tableId)?.editingFrame(p.editing);
        break;
      case "viewport":
        this.emit("viewport", { userId: p.userId, tableId: p.tableId, viewport: p.viewport });
        break;
    }
  }
}

/** The default storage name: the server and the user the options name. */
function storageKey(o: ClientOptions): string {
  const user = o.devUser?.userId ?? (o.token ? jwtSubject(o.token) : undefined) ?? "default";
  return `${o.url}|${user}`;
}

/** Whether `e` is the event `edit` (still pending) became: same record, kind and values. */
function isEditOf(edit: QueuedEdit, e: ChangeEvent): boolean {
  if (edit.tableId !== e.tableId || edit.recordId !== e.entityId || edit.type !== e.type) return false;
  const values = (cs: readonly FieldChange[] | null | undefined) =>
    JSON.stringify((cs ?? []).map((c) => [c.fieldId, c.newValue ?? null]));
  return values(edit.changes) === values(e.changes);
}
