/**
 * rtsync client: one WebSocket to an rtsync sidecar, with authentication,
 * subscriptions, changes with acks as promises, recovery after every
 * reconnect, an offline outbox, and presence.
 *
 * Data flow: `change()` sends `record_change` (or queues it in the outbox
 * while offline); frames from the server update the per-table
 * `lastEventId` and are emitted as typed events; after a reconnect every
 * table is recovered with `recover_connection` from its `lastEventId`, then
 * the outbox is flushed with `sync_offline_changes`.
 */
import { decode, encode } from "@msgpack/msgpack";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

export interface FieldChange {
  fieldId: string;
  oldValue?: Json;
  newValue?: Json;
}

export interface ChangeEvent {
  id: string;
  type: "create" | "update" | "delete" | string;
  entityType: string;
  entityId: string;
  tableId?: string;
  baseId?: string;
  userId: string;
  timestamp: number;
  changes?: FieldChange[];
  metadata?: { [k: string]: Json };
  version: number;
  clientChangeId?: string;
}

export interface CommitResult {
  status: "applied" | "merged" | "overwritten" | "rejected" | "duplicate";
  eventId?: string;
  version: number;
  conflicts?: { fieldId: string; theirValue: Json }[];
  current?: { version: number; fields: { [fieldId: string]: Json }; deleted?: boolean };
  reason?: string;
}

export interface Cursor {
  recordId: string;
  fieldId: string;
  x?: number;
  y?: number;
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
  avatarUrl?: string;
  tableId: string;
  viewId?: string;
  cursor?: Cursor;
  selection?: Selection;
  lastSeen: number;
  color: string;
}

export type Status = "connecting" | "online" | "offline";

/** Events a client emits, with their payloads. */
export interface ClientEvents {
  status: Status;
  change: ChangeEvent;
  users: { tableId: string; users: UserPresence[] };
  joined: UserPresence;
  left: { userId: string; tableId: string };
  cursor: { userId: string; tableId: string; cursor: Cursor };
  selection: { userId: string; tableId: string; selection: Selection };
  /** A change of ours was rejected: roll the shown value back to `current`. */
  rollback: { tableId: string; recordId: string; result: CommitResult };
  /** The table's history is gone: reload it, then it is subscribed again. */
  resync: { tableId: string; reason: string };
  error: { code: string; message: string };
}

export interface ChangeOptions {
  type?: "create" | "update" | "delete";
  version?: number;
  baseId?: string;
  /** `"reject"` turns a conflicting write into a rejection (rolled back). */
  onConflict?: "reject";
}

/** Queued offline edits. IndexedDB in browsers, memory elsewhere. */
export interface Outbox {
  all(): Promise<QueuedChange[]>;
  put(change: QueuedChange): Promise<void>;
  remove(clientChangeIds: string[]): Promise<void>;
}

export interface QueuedChange {
  type: string;
  entityId: string;
  tableId: string;
  baseId?: string;
  changes: FieldChange[];
  metadata?: { [k: string]: Json };
  version?: number;
  clientChangeId: string;
  timestamp: number;
}

export interface ClientOptions {
  /** `ws://host:4000/ws` */
  url: string;
  /** A JWT; or, against a development sidecar, `devUser`. */
  token?: string;
  devUser?: { userId: string; userName: string; avatarUrl?: string };
  encoding?: "msgpack" | "json";
  outbox?: Outbox;
  /** Milliseconds: first reconnect delay cap and the largest one. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  requestTimeoutMs?: number;
  WebSocket?: typeof WebSocket;
}

type Handler<T> = (payload: T) => void;

interface Pending {
  resolve: (v: any) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface TableState {
  viewId?: string;
  lastEventId?: string;
  users: Map<string, UserPresence>;
}

/** An error answered by the server. */
export class RtsyncError extends Error {
  constructor(public code: string, message: string) {
    super(message);
  }
}

export class MemoryOutbox implements Outbox {
  private items = new Map<string, QueuedChange>();
  async all() {
    return [...this.items.values()];
  }
  async put(c: QueuedChange) {
    this.items.set(c.clientChangeId, c);
  }
  async remove(ids: string[]) {
    ids.forEach((id) => this.items.delete(id));
  }
}

export class IndexedDbOutbox implements Outbox {
  private db: Promise<IDBDatabase>;
  constructor(name = "rtsync-outbox") {
    this.db = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("changes", { keyPath: "clientChangeId" });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  private async tx<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const t = db.transaction("changes", mode);
      const req = f(t.objectStore("changes"));
      t.oncomplete = () => resolve(req ? (req.result as T) : undefined);
      t.onerror = () => reject(t.error);
    });
  }
  async all() {
    const items = (await this.tx<QueuedChange[]>("readonly", (s) => s.getAll())) ?? [];
    return items.sort((a, b) => a.timestamp - b.timestamp);
  }
  async put(c: QueuedChange) {
    await this.tx("readwrite", (s) => void s.put(c));
  }
  async remove(ids: string[]) {
    await this.tx("readwrite", (s) => ids.forEach((id) => s.delete(id)));
  }
}

function defaultOutbox(): Outbox {
  return typeof indexedDB !== "undefined" ? new IndexedDbOutbox() : new MemoryOutbox();
}

function newId(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class RtsyncClient {
  private ws?: WebSocket;
  private rid = 1;
  private pending = new Map<number, Pending>();
  private handlers = new Map<keyof ClientEvents, Set<Handler<any>>>();
  private tables = new Map<string, TableState>();
  private waiting = new Map<string, { resolve: (r: CommitResult) => void; tableId: string; recordId: string }>();
  private attempt = 0;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private wantOnline = true;
  private outbox: Outbox;
  private opts: Required<Pick<ClientOptions, "encoding" | "backoffBaseMs" | "backoffMaxMs" | "requestTimeoutMs">> & ClientOptions;
  status: Status = "offline";
  userId?: string;

  constructor(options: ClientOptions) {
    this.opts = { encoding: "msgpack", backoffBaseMs: 250, backoffMaxMs: 10_000, requestTimeoutMs: 15_000, ...options };
    this.outbox = options.outbox ?? defaultOutbox();
  }

  on<K extends keyof ClientEvents>(event: K, handler: Handler<ClientEvents[K]>): () => void {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)!.add(handler);
    return () => this.handlers.get(event)?.delete(handler);
  }

  private emit<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]) {
    this.handlers.get(event)?.forEach((h) => h(payload));
  }

  private setStatus(s: Status) {
    if (this.status !== s) {
      this.status = s;
      this.emit("status", s);
    }
  }

  /** Connects (and keeps reconnecting until `disconnect` or `setOffline(true)`). */
  connect(): Promise<void> {
    this.wantOnline = true;
    return this.open();
  }

  disconnect() {
    this.wantOnline = false;
    clearTimeout(this.reconnectTimer);
    this.ws?.close(1000);
  }

  /** Simulates going offline (edits queue in the outbox) and back. */
  setOffline(offline: boolean) {
    if (offline) {
      this.disconnect();
      this.setStatus("offline");
    } else if (!this.wantOnline) {
      void this.connect();
    }
  }

  private open(): Promise<void> {
    const WS = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    const protocol = this.opts.encoding === "json" ? "rtsync.v1.json" : "rtsync.v1.msgpack";
    this.setStatus("connecting");
    return new Promise((resolve, reject) => {
      const ws: WebSocket = new WS(this.opts.url, protocol);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let opened = false;
      ws.onopen = async () => {
        opened = true;
        try {
          const auth = this.opts.token ? { token: this.opts.token } : this.opts.devUser;
          const ack = await this.request("authenticate", auth);
          this.userId = ack.userId;
          this.attempt = 0;
          this.setStatus("online");
          await this.resume();
          resolve();
        } catch (e) {
          reject(e);
        }
      };
      ws.onmessage = (m: MessageEvent) => this.onFrame(m.data);
      ws.onclose = () => {
        this.failPending(new RtsyncError("unavailable", "connection closed"));
        if (!opened) reject(new RtsyncError("unavailable", "could not connect"));
        if (this.ws === ws) this.scheduleReconnect();
      };
      ws.onerror = () => undefined;
    });
  }

  private scheduleReconnect() {
    if (!this.wantOnline) {
      this.setStatus("offline");
      return;
    }
    this.setStatus("connecting");
    // Exponential backoff with full jitter.
    const cap = Math.min(this.opts.backoffMaxMs, this.opts.backoffBaseMs * 2 ** this.attempt);
    this.attempt++;
    this.reconnectTimer = setTimeout(() => void this.open().catch(() => undefined), Math.random() * cap);
  }

  private failPending(e: Error) {
    this.pending.forEach((p) => {
      clearTimeout(p.timer);
      p.reject(e);
    });
    this.pending.clear();
  }

  /** After (re)connecting: recover every table, then flush the outbox. */
  private async resume() {
    for (const [tableId, t] of this.tables) {
      await this.enterTable(tableId, t);
    }
    await this.flushOutbox();
  }

  private async enterTable(tableId: string, t: TableState) {
    if (t.lastEventId) {
      const ack = await this.request("recover_connection", { tableId, viewId: t.viewId, lastEventId: t.lastEventId });
      if (!ack.resyncRequired) return;
      t.lastEventId = undefined;
    }
    const ack = await this.request("subscribe_to_table", { tableId, viewId: t.viewId });
    t.lastEventId = ack.lastEventId;
  }

  private send(event: string, data: unknown, rid?: number) {
    const frame = rid === undefined ? [event, data] : [event, data, rid];
    if (!this.ws || this.ws.readyState !== 1) throw new RtsyncError("unavailable", "not connected");
    this.ws.send(this.opts.encoding === "json" ? JSON.stringify(frame) : encode(frame));
  }

  /** Sends a request and resolves with its ack (rejects with its error). */
  request(event: string, data: unknown): Promise<any> {
    const rid = this.rid++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new RtsyncError("unavailable", `${event} timed out`));
      }, this.opts.requestTimeoutMs);
      this.pending.set(rid, { resolve, reject, timer });
      try {
        this.send(event, data, rid);
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(rid);
        reject(e);
      }
    });
  }

  async subscribe(tableId: string, viewId?: string): Promise<void> {
    const t: TableState = this.tables.get(tableId) ?? { viewId, users: new Map() };
    this.tables.set(tableId, t);
    if (this.status === "online") await this.enterTable(tableId, t);
  }

  async unsubscribe(tableId: string) {
    this.tables.delete(tableId);
    if (this.status === "online") await this.request("unsubscribe_from_table", { tableId });
  }

  /** Present users of a table. */
  users(tableId: string): UserPresence[] {
    return [...(this.tables.get(tableId)?.users.values() ?? [])];
  }

  /**
   * Changes fields of a record. Resolves with the CommitResult once the
   * server committed it (at once when online; after reconnecting when
   * offline). A rejected change also emits `rollback`.
   */
  change(tableId: string, recordId: string, changes: FieldChange[], options: ChangeOptions = {}): Promise<CommitResult> {
    const clientChangeId = newId();
    const metadata = options.onConflict ? { onConflict: options.onConflict } : undefined;
    const type = options.type ?? "update";
    const done = new Promise<CommitResult>((resolve) => this.waiting.set(clientChangeId, { resolve, tableId, recordId }));
    const queued: QueuedChange = {
      type, entityId: recordId, tableId, baseId: options.baseId, changes, metadata,
      version: options.version, clientChangeId, timestamp: Date.now(),
    };
    if (this.status !== "online") {
      void this.outbox.put(queued);
      return done;
    }
    this.request("record_change", {
      type, recordId, tableId, baseId: options.baseId, changes, metadata, version: options.version, clientChangeId,
    }).then(
      (result: CommitResult) => this.settle(clientChangeId, result),
      () => void this.outbox.put(queued), // lost on the way: retried (idempotently) on reconnect
    );
    return done;
  }

  private settle(clientChangeId: string, result: CommitResult) {
    const w = this.waiting.get(clientChangeId);
    if (!w) return;
    this.waiting.delete(clientChangeId);
    if (result.status === "rejected") this.emit("rollback", { tableId: w.tableId, recordId: w.recordId, result });
    w.resolve(result);
  }

  private async flushOutbox() {
    const queued = await this.outbox.all();
    if (queued.length === 0) return;
    await this.request("sync_offline_changes", queued);
    await this.outbox.remove(queued.map((q) => q.clientChangeId));
  }

  private lastCursor = 0;
  private cursorTimer?: ReturnType<typeof setTimeout>;
  private pendingCursor?: { tableId: string; cursor: Cursor };

  /** Sends the cursor, at most 20 times a second (the latest wins). */
  moveCursor(tableId: string, cursor: Cursor) {
    this.pendingCursor = { tableId, cursor };
    const wait = 50 - (Date.now() - this.lastCursor);
    if (wait <= 0) this.flushCursor();
    else if (!this.cursorTimer) this.cursorTimer = setTimeout(() => this.flushCursor(), wait);
  }

  private flushCursor() {
    this.cursorTimer = undefined;
    if (!this.pendingCursor || this.status !== "online") return;
    this.lastCursor = Date.now();
    try {
      this.send("cursor_position", this.pendingCursor);
    } catch {
      /* offline: cursors are not queued */
    }
    this.pendingCursor = undefined;
  }

  select(tableId: string, selection: Selection) {
    if (this.status === "online") this.send("selection", { tableId, selection });
  }

  heartbeat(tableId: string) {
    if (this.status === "online") this.send("heartbeat", { tableId });
  }

  private applyEvents(events: ChangeEvent[]) {
    for (const e of events) {
      const t = e.tableId ? this.tables.get(e.tableId) : undefined;
      if (t) t.lastEventId = e.id;
      this.emit("change", e);
    }
  }

  private onFrame(raw: ArrayBuffer | string) {
    let frame: any;
    try {
      frame = typeof raw === "string" ? JSON.parse(raw) : decode(new Uint8Array(raw));
    } catch {
      return;
    }
    const [event, data, rid] = frame as [string, any, number | undefined];
    if (rid !== undefined && (event === "ack" || event === "error")) {
      const p = this.pending.get(rid);
      if (p) {
        this.pending.delete(rid);
        clearTimeout(p.timer);
        if (event === "ack") p.resolve(data);
        else p.reject(new RtsyncError(data.code, data.message));
      }
      return;
    }
    switch (event) {
      case "record_change":
        this.applyEvents([data]);
        break;
      case "batch_changes":
      case "missed_events":
      case "recent_changes":
        this.applyEvents(data);
        break;
      case "table_users": {
        const users = data as UserPresence[];
        const tableId = users[0]?.tableId;
        const t = tableId ? this.tables.get(tableId) : undefined;
        if (t) {
          t.users = new Map(users.map((u) => [u.userId, u]));
          this.emit("users", { tableId, users });
        }
        break;
      }
      case "user_joined":
      case "user_reconnected": {
        this.tables.get(data.tableId)?.users.set(data.userId, data);
        this.emit("joined", data);
        break;
      }
      case "user_left":
        this.tables.get(data.tableId)?.users.delete(data.userId);
        this.emit("left", data);
        break;
      case "cursor_position": {
        const u = this.tables.get(data.tableId)?.users.get(data.userId);
        if (u) u.cursor = data.cursor;
        this.emit("cursor", data);
        break;
      }
      case "selection": {
        const u = this.tables.get(data.tableId)?.users.get(data.userId);
        if (u) u.selection = data.selection;
        this.emit("selection", data);
        break;
      }
      case "offline_changes": {
        for (const e of data.events as ChangeEvent[]) {
          const t = e.tableId ? this.tables.get(e.tableId) : undefined;
          this.emit("change", e);
          if (e.clientChangeId) this.settle(e.clientChangeId, { status: "applied", eventId: e.id, version: e.version });
          void t;
        }
        for (const r of data.rejected as (CommitResult & { clientChangeId: string })[]) this.settle(r.clientChangeId, r);
        break;
      }
      case "resync_required": {
        const t = this.tables.get(data.tableId);
        if (t) t.lastEventId = undefined;
        this.emit("resync", data);
        break;
      }
      case "error":
        this.emit("error", data);
        break;
    }
  }
}
