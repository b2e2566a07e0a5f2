/**
 * The outbox: every edit the user makes, from the moment it is made until
 * the server has answered it for good.
 *
 * An edit gets its `clientChangeId` when it is made and is stored (see
 * `storage.ts`) before anything else. The outbox sends the queue in order,
 * one request at a time: a single edit as `record_change`, several as one
 * `sync_offline_changes` chunk (at most `maxBatch` edits and
 * `maxChunkBytes`, never two versioned edits of one record). Then:
 *
 * - an answer settles each edit with the server's CommitResult (from the
 *   ack's `results`), and a `rejected` one fires `rollback`;
 * - a transient failure (see `isTransient`) keeps the edits queued with
 *   the same ids: sent again on the next connection, or after a capped
 *   backoff while connected; a resend is answered `duplicate` by the server;
 * - a permanent refusal of a chunk (`forbidden`, `bad_request`,
 *   `payload_too_large`, ...) sends its edits one by one, so only the edit
 *   that is refused settles as rejected (with `error`) and nothing after it
 *   is blocked.
 *
 * States: `idle` (nothing in flight), `sending` (one request in flight),
 * `waiting` (backing off after a transient failure while connected).
 */
import { Emitter } from "./emitter.js";
import { isTransient, RtsyncError } from "./errors.js";
import { OutboxStorage, QueuedEdit } from "./storage.js";
import { CommitResult, isCommitted, isRejected } from "./wire.js";

/** What the outbox needs of a connection. */
export interface OutboxLink {
  readonly online: boolean;
  request<T>(event: string, data: unknown): Promise<T>;
}

export interface OutboxOptions {
  /** Most edits per `sync_offline_changes` (the server's `RTS_MAX_BATCH`). */
  maxBatch: number;
  /** Most bytes (as JSON) of edits per request. */
  maxChunkBytes: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

/** An edit as the app makes it; the outbox adds its id, time and order. */
export type NewEdit = Omit<QueuedEdit, "clientChangeId" | "createdAt" | "seq">;

export interface Settled {
  edit: QueuedEdit;
  result: CommitResult;
}

interface OutboxEvents {
  /** An edit has its final answer (`result.status` may be `rejected`). */
  settled: Settled;
  /** An edit was refused: the app rolls its value back. */
  rollback: Settled;
  /** The queue changed: `count` edits await an answer. */
  pending: { count: number };
  /** The storage failed: the edit is still sent, but not durable. */
  storageError: { error: unknown };
}

export type OutboxState = "idle" | "sending" | "waiting";

export class Outbox extends Emitter<OutboxEvents> {
  state: OutboxState = "idle";
  private queue: QueuedEdit[] = [];
  private waiters = new Map<string, (r: CommitResult) => void>();
  /** Edits sent one by one (their chunk was refused whole). */
  private solo = new Set<string>();
  private seq = 0;
  private attempt = 0;
  private timer?: ReturnType<typeof setTimeout>;
  private io: Promise<void> = Promise.resolve();
  private loaded = false;
  private stopped = false;

  constructor(
    private link: OutboxLink,
    private storage: OutboxStorage,
    private opts: OutboxOptions,
  ) {
    super();
  }

  /** Loads the edits a previous session left, then sends when online. */
  async start(): Promise<void> {
    let stored: QueuedEdit[] = [];
    try {
      stored = await this.storage.load();
    } catch (error) {
      this.emit("storageError", { error });
    }
    const fresh = new Set(this.queue.map((e) => e.clientChangeId));
    const older = stored
      .filter((e) => !fresh.has(e.clientChangeId))
      .sort((a, b) => a.createdAt - b.createdAt || a.seq - b.seq);
    this.queue = [...older, ...this.queue];
    this.loaded = true;
    if (older.length) this.emit("pending", { count: this.queue.length });
    this.kick();
  }

  /** Stops sending (in-flight answers still settle). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Queues an edit; resolves with the server's answer once it has one. */
  add(input: NewEdit): { edit: QueuedEdit; result: Promise<CommitResult> } {
    const edit: QueuedEdit = { ...input, clientChangeId: newId(), createdAt: Date.now(), seq: this.seq++ };
    if (edit.version === undefined) delete edit.version;
    const result = new Promise<CommitResult>((resolve) => this.waiters.set(edit.clientChangeId, resolve));
    this.queue.push(edit);
    this.persist(() => this.storage.put(edit));
    this.emit("pending", { count: this.queue.length });
    this.kick();
    return { edit, result };
  }

  /** Edits not answered yet, oldest first. */
  pending(): readonly QueuedEdit[] {
    return this.queue;
  }

  has(clientChangeId: string): boolean {
    return this.queue.some((e) => e.clientChangeId === clientChangeId);
  }

  /** Sends now if there is something to send (call when the link comes online). */
  kick(): void {
    if (this.state === "waiting" && this.link.online) {
      clearTimeout(this.timer);
      this.state = "idle";
    }
    if (this.state === "idle") void this.pump();
  }

  private async pump(): Promise<void> {
    while (this.state === "idle" && this.loaded && !this.stopped && this.link.online && this.queue.length > 0) {
      const chunk = this.chunk();
      this.state = "sending";
      try {
        const results = await this.send(chunk);
        this.state = "idle";
        if (!results) {
          // A server without per-change results: ask again one by one (the
          // repeats are answered `duplicate`, with the first answer).
          for (const e of chunk) this.solo.add(e.clientChangeId);
          continue;
        }
        this.attempt = 0;
        chunk.forEach((e, i) => this.settle(e, results[i]));
      } catch (e) {
        this.state = "idle";
        if (!isTransient(e)) {
          if (chunk.length > 1) {
            for (const c of chunk) this.solo.add(c.clientChangeId);
          } else {
            this.settle(chunk[0], refusal(e));
          }
          continue;
        }
        if (!this.link.online) continue; // sent again on the next connection
        const cap = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** Math.min(this.attempt++, 20));
        this.state = "waiting";
        this.timer = setTimeout(() => {
          this.state = "idle";
          void this.pump();
        }, cap / 2 + (Math.random() * cap) / 2);
        return;
      }
    }
  }

  /** The next edits to send together. */
  private chunk(): QueuedEdit[] {
    const out: QueuedEdit[] = [];
    const records = new Set<string>();
    let bytes = 0;
    for (const e of this.queue) {
      if (this.solo.has(e.clientChangeId)) {
        if (out.length === 0) out.push(e);
        break;
      }
      const size = JSON.stringify(e.changes).length + 200;
      const key = `${e.tableId}\u0000${e.recordId}`;
      if (out.length > 0 && (out.length >= this.opts.maxBatch || bytes + size > this.opts.maxChunkBytes)) break;
      if (e.version !== undefined && records.has(key)) break;
      records.add(key);
      out.push(e);
      bytes += size;
    }
    return out;
  }

  private async send(chunk: QueuedEdit[]): Promise<CommitResult[] | undefined> {
    if (chunk.length === 1) {
      const e = chunk[0];
      const result = await this.link.request<CommitResult>("record_change", {
        type: e.type, recordId: e.recordId, tableId: e.tableId, baseId: e.baseId, changes: e.changes,
        metadata: e.metadata, version: e.version, clientChangeId: e.clientChangeId,
      });
      return [result];
    }
    const ack = await this.link.request<{ results?: CommitResult[] }>(
      "sync_offline_changes",
      chunk.map((e) => ({
        type: e.type, entityId: e.recordId, tableId: e.tableId, baseId: e.baseId, changes: e.changes,
        metadata: e.metadata, version: e.version, clientChangeId: e.clientChangeId, timestamp: e.createdAt,
      })),
    );
    const results = ack?.results;
    return Array.isArray(results) && results.length === chunk.length ? results : undefined;
  }

  private settle(edit: QueuedEdit, result: CommitResult) {
    const i = this.queue.findIndex((e) => e.clientChangeId === edit.clientChangeId);
    if (i < 0) return;
    this.queue.splice(i, 1);
    this.solo.delete(edit.clientChangeId);
    this.persist(() => this.storage.remove([edit.clientChangeId]));
    if (isCommitted(result)) this.rebaseAfter(edit, result.version);
    const waiter = this.waiters.get(edit.clientChangeId);
    this.waiters.delete(edit.clientChangeId);
    this.emit("pending", { count: this.queue.length });
    waiter?.(result);
    this.emit("settled", { edit, result });
    if (isRejected(result)) this.emit("rollback", { edit, result });
  }

  /** Later edits of the record that were based on this one move to its version. */
  private rebaseAfter(edit: QueuedEdit, version: number) {
    for (const e of this.queue) {
      if (e.rebase && e.tableId === edit.tableId && e.recordId === edit.recordId && e.version !== undefined && e.version < version) {
        e.version = version;
        const copy = { ...e };
        this.persist(() => this.storage.put(copy));
      }
    }
  }

  private persist(op: () => Promise<void>) {
    this.io = this.io.then(op).catch((error) => this.emit("storageError", { error }));
  }

  /** Resolves once every storage write so far is done (tests, shutdown). */
  flushed(): Promise<void> {
    return this.io;
  }
}

/** The answer for an edit the server refused as a request. */
function refusal(e: unknown): CommitResult {
  const error =
    e instanceof RtsyncError ? { code: e.code, message: e.message } : { code: "internal", message: String(e) };
  return { status: "rejected", version: 0, reason: error.code, error };
}

export function newId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}
