/**
 * A live table: one source of truth for rendering a table.
 *
 * It subscribes first, then pages `load_records`, and applies states and
 * events by the version rule: a record's versions go up by one per commit,
 * so an event is applied when it is the next version of the record held
 * (or version 1 of a record not held), and a state when it is newer than
 * the one held. An event that arrives before its base (a record not loaded
 * yet, or the user's own acked edit racing another writer's older event)
 * waits in `buffered` until the base comes: from its page, from the event in
 * flight, or from a `load_records` of just that record after `gapWaitMs`.
 *
 * What the app sees for a record (`get`) is the confirmed state, then the
 * buffered events, then the user's pending edits from the outbox on top
 * (optimistic). A refused edit leaves the outbox, so the view rolls back by
 * itself (to the server's `current` when the answer carries it), and
 * `rollback` fires. `resync` reloads the table.
 *
 * Undo and redo (protocol 3.3) revert the user's own latest step on the
 * table, on the server, never over a colleague's later change. The server
 * does not send the undo's events back to this connection (as for any own
 * change), so the records it wrote are read again with `load_records`.
 * `canUndo` / `canRedo` are tracked from this connection's answers: a
 * hint for enabling buttons. Another connection of the same user (another
 * tab) shares the stacks and may empty them; the next answer (`nothing`)
 * corrects the hint.
 *
 * With a field-level grant (docs/protocol.md 2.1) the server leaves out the
 * fields the user may not read: records simply lack them, and an event that
 * changed only hidden fields arrives with no changes and still moves the
 * record's version. `canRead`/`canWrite` answer from the grant in the
 * subscribe ack; an edit of a field the user may not write settles
 * `rejected` with `forbidden` at once, without a round trip.
 *
 * Views and row grants (v1.3, docs/protocol.md 2.2 and 3.5): with a view
 * (`client.table(t, {view})`) every `load_records` names it, so only the
 * view's records are read. `record_entered_view` puts the record's state in
 * the table (a newer one held is kept); `record_left_view` (also with
 * `viewId` null: the record left the user's rows) removes it, and later
 * answers or events of it are ignored until it enters again. A `view` event
 * of the followed view (its filter changed) and `setView` read the view
 * again without emptying the table: records the new pages and events do not
 * bring back are removed at the end (`left`). After the user's own commit
 * in a view or under a row grant, the records written are read again (one
 * `load_records {recordIds, viewId}` per burst), so a record the user's own
 * edit took out of the view leaves even if the server tells only others.
 */
import { Emitter } from "./emitter.js";
import { isTransient } from "./errors.js";
import type { Outbox, Settled } from "./outbox.js";
import type { Subscription, ViewMove } from "./subscription.js";
import type { EditingHandle } from "./editing.js";
import type { EditingCell } from "./presence.js";
import {
  ChangeEvent, CommitResult, FieldChange, fieldPermission, HistoryOptions, HistoryPage, isCommitted, isRejected, Json,
  LoadRecordsAck, RecordState, UndoResult, UserEditing, Viewport,
} from "./wire.js";

/** Most steps the server keeps per user and table. */
const MAX_STEPS = 100;

/** A record as the app renders it. */
export interface LiveRecord extends RecordState {
  /** How many of the user's edits of this record await the server. */
  pending: number;
}

export type RecordCause = "remote" | "local" | "load" | "commit" | "rollback" | "entered" | "left";

export interface LiveTableEvents {
  /** A record's view changed (`record` is undefined once it is gone for good). */
  record: { recordId: string; record: LiveRecord | undefined; cause: RecordCause };
  /** Every page is loaded (after a subscribe or a resync). */
  ready: { records: number };
  /** The table is being reloaded from scratch (`resync_required`). */
  reload: { reason: string };
  /** One of the user's edits lost (`rejected`) or won over (`overwritten`) another user's change. */
  conflict: {
    recordId: string;
    winner: "theirs" | "yours";
    theirs: { fieldId: string; value: Json }[];
    yours: FieldChange[];
    result: CommitResult;
  };
  /** One of the user's edits was refused: the view went back to the server's state. */
  rollback: Settled;
  /** Another user's event was applied. */
  change: ChangeEvent;
  /** v1.3: a record came into the view (or the user's rows). */
  entered: { recordId: string; record: RecordState };
  /** v1.3: a record left the view (or the user's rows), or is not in a view read again. */
  left: { recordId: string };
  /** v1.3: another user started or stopped editing a cell (see `editing`). */
  editing: UserEditing;
  /** An undo or redo was answered (`result.skipped` lists what a colleague changed since). */
  undo: { way: "undo" | "redo"; result: UndoResult };
  error: { error: unknown };
}

export interface LiveTableOptions {
  /** `reject`: a conflicting edit is rolled back; default `overwrite` (last write wins). */
  onConflict?: "reject" | "overwrite";
  pageSize?: number;
  gapWaitMs?: number;
}

/** What a LiveTable needs of the client. */
export interface LiveTableHost {
  readonly outbox: Outbox;
  request<T>(event: string, data: unknown): Promise<T>;
  whenOnline(): Promise<void>;
  /** v1.3 presence (the client provides it; optional for tests). */
  editing?(tableId: string): EditingCell[];
  startEditing?(tableId: string, recordId: string, fieldId: string): EditingHandle;
  stopEditing?(tableId: string, recordId?: string, fieldId?: string): void;
  viewport?(tableId: string, viewport: Viewport): void;
  /** v1.3: follows another view (the client provides it). */
  setView?(tableId: string, viewId: string | undefined): Promise<void>;
}

interface Delta {
  version: number;
  type: string;
  changes?: FieldChange[] | null;
}

export class LiveTable extends Emitter<LiveTableEvents> {
  /** Resolves when the first load is complete. */
  readonly ready: Promise<void>;
  /** Whether every page of the current load has arrived. */
  loaded = false;
  private confirmed = new Map<string, RecordState>();
  private buffered = new Map<string, Delta[]>();
  private cursor?: string;
  private loading = false;
  private generation = 0;
  private fetchIds = new Set<string>();
  private fetchTimer?: ReturnType<typeof setTimeout>;
  private offs: (() => void)[] = [];
  private resolveReady!: () => void;
  private closed = false;
  private undoDepth = 0;
  private redoDepth = 0;
  /** v1.3: records that left the view or the user's rows; ignored until they enter again. */
  private outside = new Set<string>();
  /** v1.3: while a view is read again, the records seen in it since. */
  private sweep?: Set<string>;
  /** v1.3: `setView` was called; the view is read once it is joined. */
  private viewSwitch = false;
  /** v1.3: records written by the user in a view, with the version written, to read again. */
  private recheckIds = new Map<string, number>();
  private recheckTimer?: ReturnType<typeof setTimeout>;

  constructor(
    readonly tableId: string,
    private host: LiveTableHost,
    private subscription: Subscription,
    private opts: LiveTableOptions = {},
  ) {
    super();
    this.ready = new Promise((r) => (this.resolveReady = r));
    this.offs.push(
      subscription.on("event", ({ event, own }) => this.onEvent(event, own)),
      subscription.on("resync", ({ reason }) => this.reload(reason)),
      subscription.on("view", (m) => this.onMove(m)),
      subscription.on("viewChanged", () => (this.viewSwitch = true)),
      subscription.on("subscribed", () => {
        if (!this.viewSwitch) return;
        this.viewSwitch = false;
        this.reload("view_switched", true);
      }),
      host.outbox.on("settled", (s) => s.edit.tableId === tableId && this.onSettled(s)),
    );
    void this.load();
  }

  /** The record as the app should render it (pending edits included). */
  get(recordId: string): LiveRecord | undefined {
    const base = this.confirmed.get(recordId);
    let r: RecordState | undefined = base && { ...base, fields: { ...base.fields } };
    for (const d of this.buffered.get(recordId) ?? []) r = applyDelta(r, recordId, d);
    let pending = 0;
    for (const e of this.host.outbox.pending()) {
      if (e.tableId !== this.tableId || e.recordId !== recordId) continue;
      pending++;
      const v = r?.version ?? 0;
      r = applyDelta(r, recordId, { version: v, type: e.type, changes: e.changes });
    }
    return r && { ...r, pending };
  }

  /** Every record that is not deleted, in record-id order. */
  records(): LiveRecord[] {
    return this.ids()
      .map((id) => this.get(id))
      .filter((r): r is LiveRecord => !!r && !r.deleted);
  }

  /** Every record held, deleted ones included, in record-id order. */
  snapshot(): LiveRecord[] {
    return this.ids()
      .map((id) => this.get(id))
      .filter((r): r is LiveRecord => !!r);
  }

  /** Loaded, with no edit awaiting the server and no event awaiting its base. */
  isSettled(): boolean {
    const pending = this.host.outbox.pending().some((e) => e.tableId === this.tableId);
    return this.loaded && !pending && this.buffered.size === 0;
  }

  /** Whether the user may see the field (every field until the table is joined). */
  canRead(fieldId: string): boolean {
    return fieldPermission(this.subscription.grant, fieldId) !== "none";
  }

  /** Whether the user may edit the field (the server has the last word until the table is joined). */
  canWrite(fieldId: string): boolean {
    return fieldPermission(this.subscription.grant, fieldId) === "rw";
  }

  /** Sets fields of a record (creating it if rtsync holds no such record). */
  set(recordId: string, fields: { [fieldId: string]: Json }): Promise<CommitResult> {
    const view = this.get(recordId);
    const changes = Object.entries(fields).map(([fieldId, newValue]) => ({
      fieldId, oldValue: view?.fields[fieldId] ?? null, newValue,
    }));
    return this.edit(recordId, view?.deleted ? "create" : "update", changes);
  }

  create(recordId: string, fields: { [fieldId: string]: Json }): Promise<CommitResult> {
    const changes = Object.entries(fields).map(([fieldId, newValue]) => ({ fieldId, newValue }));
    return this.edit(recordId, "create", changes);
  }

  delete(recordId: string): Promise<CommitResult> {
    if (this.subscription.grant?.access === "r") return Promise.resolve(forbidden(`no write access to table ${this.tableId}`));
    return this.edit(recordId, "delete", []);
  }

  /** Whether `undo()` is likely to revert something (see the class doc). */
  get canUndo(): boolean {
    return this.undoDepth > 0;
  }

  /** Whether `redo()` is likely to reapply something (see the class doc). */
  get canRedo(): boolean {
    return this.redoDepth > 0;
  }

  /** Reverts the user's latest step on this table (after the user's pending edits of it are answered). */
  undo(): Promise<UndoResult> {
    return this.revert("undo");
  }

  /** Reapplies the step the latest undo reverted. */
  redo(): Promise<UndoResult> {
    return this.revert("redo");
  }

  /**
   * (v1.3) A page of the record's history from the server: its changes,
   * newest first, each with who (`userId`), when (`timestamp`) and, per
   * field, `oldValue` → `newValue` (fields the user may not read are left
   * out). `page.next`, passed as `before`, reads the older page. History
   * goes back `RTS_RECORD_HISTORY` changes and the stream's retention.
   */
  history(recordId: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    const data: { tableId: string; recordId: string; before?: string; limit?: number } = {
      tableId: this.tableId, recordId,
    };
    if (options.before !== undefined) data.before = options.before;
    if (options.limit !== undefined) data.limit = options.limit;
    return this.host.request<HistoryPage>("record_history", data);
  }

  /** v1.3: who edits which cell of this table now (other users; their colour for a badge). */
  get editing(): EditingCell[] {
    return this.host.editing?.(this.tableId) ?? [];
  }

  /**
   * v1.3: shows the table's other users that this user edits a cell; renewed
   * by itself until `stop()` (call it on blur), `stopEditing`, or another
   * `startEditing`.
   */
  startEditing(recordId: string, fieldId: string): EditingHandle {
    const none: EditingHandle = { recordId, fieldId, stop: () => undefined };
    return this.host.startEditing?.(this.tableId, recordId, fieldId) ?? none;
  }

  /** v1.3: ends this user's editing indicator (of that cell only, when named). */
  stopEditing(recordId?: string, fieldId?: string): void {
    this.host.stopEditing?.(this.tableId, recordId, fieldId);
  }

  /** v1.3: the view followed (`undefined`: the whole table). */
  get viewId(): string | undefined {
    return this.subscription.viewId;
  }

  /**
   * v1.3: follows another view (`undefined`: the whole table). The records
   * stay shown until the new view's pages say which remain; `ready`
   * fires again when it is read.
   */
  setView(viewId: string | undefined): Promise<void> {
    return this.host.setView?.(this.tableId, viewId) ?? Promise.resolve();
  }

  /** v1.3: the rows this user sees (`{recordIds}` or `{firstRecordId, lastRecordId}`). */
  viewport(viewport: Viewport): void {
    this.host.viewport?.(this.tableId, viewport);
  }

  /** A `user_editing` of this table (from the client). */
  editingFrame(e: UserEditing): void {
    this.emit("editing", e);
  }

  /** Stops following the table (the subscription stays with the client). */
  close(): void {
    this.closed = true;
    this.generation++;
    clearTimeout(this.fetchTimer);
    clearTimeout(this.recheckTimer);
    for (const off of this.offs) off();
  }

  private edit(recordId: string, type: "create" | "update" | "delete", changes: FieldChange[]): Promise<CommitResult> {
    const locked = changes.find((c) => !this.canWrite(c.fieldId));
    if (locked) {
      return Promise.resolve(forbidden(`no write access to field ${locked.fieldId} of table ${this.tableId}`));
    }
    const view = this.get(recordId);
    const { result } = this.host.outbox.add({
      tableId: this.tableId, recordId, type, changes,
      // The version the user sees: confirmed, plus their own acked edits.
      version: type === "create" ? undefined : (view?.version ?? 0),
      metadata: this.opts.onConflict === "reject" ? { onConflict: "reject" } : undefined,
      rebase: true,
    });
    this.changed(recordId, "local");
    return result;
  }

  private async revert(way: "undo" | "redo"): Promise<UndoResult> {
    await this.editsAnswered();
    const result = await this.host.request<UndoResult>(way, { tableId: this.tableId });
    const wrote = result.events ?? [];
    if (result.status === "nothing") {
      if (way === "undo") this.undoDepth = 0;
      else this.redoDepth = 0;
    } else if (result.status !== "duplicate") {
      const [from, to] = way === "undo" ? ["undoDepth", "redoDepth"] as const : ["redoDepth", "undoDepth"] as const;
      this[from] = Math.max(0, this[from] - 1);
      if (wrote.length) this[to] = Math.min(MAX_STEPS, this[to] + 1);
    }
    for (const e of wrote) this.subscription.acked(e.eventId);
    await this.refresh(wrote.map((e) => e.recordId));
    this.emit("undo", { way, result });
    return result;
  }

  /** Resolves once none of the user's edits of this table awaits the server. */
  private editsAnswered(): Promise<void> {
    const pending = () => this.host.outbox.pending().some((e) => e.tableId === this.tableId);
    if (!pending()) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.host.outbox.on("settled", () => {
        if (!pending()) {
          off();
          resolve();
        }
      });
    });
  }

  /** Reads records again (written by this connection's undo) and applies their states. */
  private async refresh(recordIds: string[]) {
    const ids = [...new Set(recordIds)];
    for (let i = 0; i < ids.length; i += 1000) {
      const slice = ids.slice(i, i + 1000);
      const ack = await this.host.request<LoadRecordsAck>("load_records", this.loadRequest({ recordIds: slice }));
      const found = new Set<string>();
      for (const st of ack.records ?? []) {
        found.add(st.recordId);
        this.applyState(st);
        this.changed(st.recordId, "commit");
      }
      // Undone into a state outside the view or the user's rows.
      if (this.filtered()) for (const id of slice) if (!found.has(id)) this.leave(id);
    }
  }

  private ids(): string[] {
    const ids = new Set<string>([...this.confirmed.keys(), ...this.buffered.keys()]);
    for (const e of this.host.outbox.pending()) if (e.tableId === this.tableId) ids.add(e.recordId);
    return [...ids].sort();
  }

  private onEvent(e: ChangeEvent, own: boolean) {
    if (e.entityType === "view" && e.entityId === this.subscription.viewId && this.subscription.viewId !== undefined) {
      // The followed view's filter changed: later events follow the new one.
      this.reload("view_changed", true);
      return;
    }
    if (e.entityType !== "record" || typeof e.entityId !== "string") return;
    this.sweep?.add(e.entityId);
    this.offer(e.entityId, { version: e.version, type: e.type, changes: e.changes });
    this.changed(e.entityId, own ? "commit" : "remote");
    if (!own) this.emit("change", e);
  }

  private onSettled({ edit, result }: Settled) {
    if (isCommitted(result)) {
      if (result.status !== "duplicate") {
        this.undoDepth = Math.min(MAX_STEPS, this.undoDepth + 1);
        this.redoDepth = 0;
      }
      this.offer(edit.recordId, { version: result.version, type: edit.type, changes: edit.changes });
      this.sweep?.add(edit.recordId); // kept through a reread; the recheck decides
      if (this.filtered() && !this.outside.has(edit.recordId)) this.recheck(edit.recordId, result.version);
      if (result.status === "overwritten" && result.conflicts?.length) {
        this.emit("conflict", {
          recordId: edit.recordId, winner: "yours", yours: edit.changes, result,
          theirs: result.conflicts.map((c) => ({ fieldId: c.fieldId, value: c.theirValue })),
        });
      }
      this.changed(edit.recordId, "commit");
      return;
    }
    if (isRejected(result) && result.current) {
      const c = result.current;
      this.applyState({ recordId: edit.recordId, version: c.version, deleted: !!c.deleted, fields: c.fields ?? {} });
      this.emit("conflict", {
        recordId: edit.recordId, winner: "theirs", yours: edit.changes, result,
        theirs: edit.changes.map((f) => ({ fieldId: f.fieldId, value: c.fields?.[f.fieldId] ?? null })),
      });
    }
    this.changed(edit.recordId, "rollback");
    this.emit("rollback", { edit, result });
  }

  /** Applies a delta if it is the record's next version, else keeps it until its base comes. */
  private offer(recordId: string, d: Delta) {
    if (this.outside.has(recordId)) return; // not in the view (or the user's rows) now
    const r = this.confirmed.get(recordId);
    if (typeof d.version !== "number") {
      // A producer's event without a version: applied as it comes.
      if (r) this.confirmed.set(recordId, applyDelta(r, recordId, { ...d, version: r.version }));
      return;
    }
    if (r && d.version <= r.version) return;
    if ((r && d.version === r.version + 1) || (!r && d.version === 1)) {
      this.confirmed.set(recordId, applyDelta(r, recordId, d));
      this.drain(recordId);
      return;
    }
    const list = this.buffered.get(recordId) ?? [];
    if (!list.some((x) => x.version === d.version)) list.push(d);
    list.sort((a, b) => a.version - b.version);
    this.buffered.set(recordId, list);
    this.needBase(recordId);
  }

  private applyState(st: RecordState) {
    this.sweep?.add(st.recordId);
    const r = this.confirmed.get(st.recordId);
    if (!r || st.version > r.version) {
      this.confirmed.set(st.recordId, { recordId: st.recordId, version: st.version, deleted: !!st.deleted, fields: { ...st.fields } });
    }
    this.drain(st.recordId);
  }

  /** Applies buffered deltas that now follow the held version. */
  private drain(recordId: string) {
    const list = this.buffered.get(recordId);
    if (!list) return;
    let r = this.confirmed.get(recordId);
    while (list.length && r) {
      if (list[0].version <= r.version) list.shift();
      else if (list[0].version === r.version + 1) {
        const d = list.shift() as Delta;
        r = applyDelta(r, recordId, d);
        this.confirmed.set(recordId, r);
      } else break;
    }
    if (list.length === 0) {
      this.buffered.delete(recordId);
      this.fetchIds.delete(recordId);
    }
  }

  /** A buffered record's base: its page is coming, or it is fetched after a short wait. */
  private needBase(recordId: string) {
    if (this.loading && (this.cursor === undefined || recordId > this.cursor)) return;
    this.fetchIds.add(recordId);
    if (!this.fetchTimer) this.fetchTimer = setTimeout(() => void this.fetch(), this.opts.gapWaitMs ?? 100);
  }

  private async fetch() {
    this.fetchTimer = undefined;
    const generation = this.generation;
    const ids = [...this.fetchIds].filter((id) => this.buffered.has(id)).slice(0, 1000);
    if (ids.length === 0 || this.closed) return;
    let ack: LoadRecordsAck;
    try {
      ack = await this.host.request<LoadRecordsAck>("load_records", this.loadRequest({ recordIds: ids }));
    } catch (error) {
      if (!isTransient(error)) this.emit("error", { error });
      await this.host.whenOnline();
      if (generation === this.generation && !this.fetchTimer) this.fetchTimer = setTimeout(() => void this.fetch(), 0);
      return;
    }
    if (generation !== this.generation) return;
    const found = new Set<string>();
    for (const st of ack.records ?? []) {
      found.add(st.recordId);
      this.applyState(st);
    }
    for (const id of ids) {
      this.fetchIds.delete(id);
      const list = this.buffered.get(id);
      if (!found.has(id) && list) {
        // rtsync holds no state for it (a producer's XADD): the events are all there is.
        let r = this.confirmed.get(id);
        for (const d of list) r = applyDelta(r, id, d);
        if (r) this.confirmed.set(id, r);
        this.buffered.delete(id);
      }
      this.changed(id, "load");
    }
    if (this.fetchIds.size && !this.fetchTimer) this.fetchTimer = setTimeout(() => void this.fetch(), 0);
  }

  private async load() {
    const generation = ++this.generation;
    this.loading = true;
    this.loaded = false;
    this.cursor = undefined;
    try {
      await this.subscription.first;
    } catch (error) {
      this.emit("error", { error });
      return;
    }
    let after: string | undefined;
    let count = 0;
    for (;;) {
      if (generation !== this.generation) return;
      let page: LoadRecordsAck;
      try {
        page = await this.host.request<LoadRecordsAck>("load_records", this.loadRequest({
          after, limit: this.opts.pageSize ?? 500,
        }));
      } catch (error) {
        if (!isTransient(error)) {
          this.emit("error", { error });
          return;
        }
        await this.host.whenOnline();
        continue;
      }
      if (generation !== this.generation) return;
      for (const st of page.records ?? []) {
        this.outside.delete(st.recordId);
        this.applyState(st);
        this.changed(st.recordId, "load");
        count++;
      }
      if (!page.next) break;
      after = page.next;
      this.cursor = after;
    }
    this.loading = false;
    this.loaded = true;
    this.endSweep();
    for (const id of this.buffered.keys()) this.needBase(id);
    this.emit("ready", { records: count });
    this.resolveReady();
  }

  /**
   * Reads the table again. `keep` (v1.3, a view changed or was switched):
   * the records stay shown while the pages come, and those the view no
   * longer holds are removed at the end (`endSweep`).
   */
  private reload(reason: string, keep = false) {
    if (this.closed) return;
    if (keep) {
      this.sweep = new Set();
      this.emit("reload", { reason });
      void this.load();
      return;
    }
    this.sweep = undefined;
    this.outside.clear();
    const ids = this.ids();
    this.confirmed.clear();
    this.buffered.clear();
    this.fetchIds.clear();
    this.emit("reload", { reason });
    for (const id of ids) this.changed(id, "load");
    void this.load();
  }

  /** `load_records`' data: the followed view named (v1.3). */
  private loadRequest(d: { recordIds?: string[]; after?: string; limit?: number }): { [k: string]: unknown } {
    const req: { [k: string]: unknown } = { tableId: this.tableId };
    if (this.subscription.viewId !== undefined) req.viewId = this.subscription.viewId;
    for (const [k, v] of Object.entries(d)) if (v !== undefined) req[k] = v;
    return req;
  }

  /** Whether the server sends only some of the table's records: a view, or a row grant. */
  private filtered(): boolean {
    return this.subscription.viewId !== undefined || !!this.subscription.grant?.rows;
  }

  /** v1.3: `record_entered_view` / `record_left_view`, in stream order. */
  private onMove(m: ViewMove) {
    if (m.kind === "leave") {
      this.leave(m.recordId);
      return;
    }
    const st = m.record;
    this.outside.delete(st.recordId);
    const list = this.buffered.get(st.recordId);
    if (list) {
      const later = list.filter((d) => d.version > st.version);
      if (later.length) this.buffered.set(st.recordId, later);
      else this.buffered.delete(st.recordId);
    }
    this.applyState(st);
    this.changed(st.recordId, "entered");
    this.emit("entered", { recordId: st.recordId, record: st });
  }

  /** A record is no longer in the view or the user's rows: dropped, and ignored until it enters again. */
  private leave(recordId: string) {
    const held = this.confirmed.has(recordId) || this.buffered.has(recordId);
    this.confirmed.delete(recordId);
    this.buffered.delete(recordId);
    this.fetchIds.delete(recordId);
    this.recheckIds.delete(recordId);
    this.sweep?.delete(recordId);
    this.outside.add(recordId);
    this.changed(recordId, "left");
    if (held) this.emit("left", { recordId });
  }

  /** The end of a view read again: what it did not bring back has left. */
  private endSweep() {
    const seen = this.sweep;
    this.sweep = undefined;
    if (!seen) return;
    const gone = [...new Set([...this.confirmed.keys(), ...this.buffered.keys()])].filter((id) => !seen.has(id));
    for (const id of gone) this.leave(id);
  }

  /** Reads a record the user wrote in a view again, soon, with others written meanwhile. */
  private recheck(recordId: string, version: number) {
    this.recheckIds.set(recordId, Math.max(version, this.recheckIds.get(recordId) ?? 0));
    if (!this.recheckTimer) this.recheckTimer = setTimeout(() => void this.runRecheck(), this.opts.gapWaitMs ?? 100);
  }

  private async runRecheck() {
    this.recheckTimer = undefined;
    const batch = [...this.recheckIds].slice(0, 1000);
    if (batch.length === 0 || this.closed) return;
    for (const [id] of batch) this.recheckIds.delete(id);
    const generation = this.generation;
    let ack: LoadRecordsAck;
    try {
      ack = await this.host.request<LoadRecordsAck>("load_records", this.loadRequest({ recordIds: batch.map(([id]) => id) }));
    } catch (error) {
      if (!isTransient(error)) this.emit("error", { error });
      return; // a reconnect recovers the view; the check is only a shortcut
    }
    if (generation !== this.generation || this.closed) return;
    const found = new Set<string>();
    for (const st of ack.records ?? []) {
      found.add(st.recordId);
      if (this.outside.has(st.recordId)) continue;
      this.applyState(st);
      this.changed(st.recordId, "load");
    }
    for (const [id, version] of batch) {
      // Gone from the view, unless a newer state (an entry) came since.
      if (!found.has(id) && (this.confirmed.get(id)?.version ?? 0) <= version) this.leave(id);
    }
    if (this.recheckIds.size && !this.recheckTimer) this.recheckTimer = setTimeout(() => void this.runRecheck(), 0);
  }

  private changed(recordId: string, cause: RecordCause) {
    this.emit("record", { recordId, record: this.get(recordId), cause });
  }
}

/** The answer of an edit the grant refuses before it is sent. */
function forbidden(message: string): CommitResult {
  return { status: "rejected", version: 0, reason: "forbidden", error: { code: "forbidden", message } };
}

/** A record after one event (or pending edit) of it. */
export function applyDelta(r: RecordState | undefined, recordId: string, d: Delta): RecordState {
  if (d.type === "delete") {
    return { recordId, version: d.version, deleted: true, fields: { ...(r?.fields ?? {}) } };
  }
  const fields = d.type === "create" && r?.deleted ? {} : { ...(r?.fields ?? {}) };
  // A null (or absent) value clears the field: rtsync's state has no such
  // field then, and load_records returns none.
  for (const c of d.changes ?? []) {
    if (c.newValue === undefined || c.newValue === null) delete fields[c.fieldId];
    else fields[c.fieldId] = c.newValue;
  }
  return { recordId, version: d.version, deleted: false, fields };
}
