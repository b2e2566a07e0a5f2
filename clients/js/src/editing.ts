/**
 * Editing indicators (docs/protocol.md 3.4), this user's side: the cell the
 * user edits on each table, announced with `editing` "start" and renewed
 * every `renewMs` (before the server's `RTS_EDITING_TTL_MS`, 5 s, runs out)
 * until it is stopped, another cell is started, or the table is left. On a
 * new connection the server has forgotten it, so `resend` announces it
 * again after the table is joined. Others' indicators are kept by
 * `presence.ts` from `user_editing` and `table_users`.
 */

/** Sends a frame without waiting for its ack (false when offline). */
export type SendFrame = (event: string, data: unknown) => boolean;

interface Active {
  recordId: string;
  fieldId: string;
  timer: ReturnType<typeof setInterval>;
}

/** A started editing indicator; `stop` ends it (once). */
export interface EditingHandle {
  readonly recordId: string;
  readonly fieldId: string;
  stop(): void;
}

export class OwnEditing {
  private active = new Map<string, Active>();

  constructor(private send: SendFrame, private renewMs: number) {}

  /** Starts (or moves) the user's indicator on `tableId` to one cell. */
  start(tableId: string, recordId: string, fieldId: string): EditingHandle {
    this.clear(tableId);
    const announce = () => this.send("editing", { tableId, recordId, fieldId, state: "start" });
    announce();
    const timer = setInterval(announce, this.renewMs);
    this.active.set(tableId, { recordId, fieldId, timer });
    return { recordId, fieldId, stop: () => this.stop(tableId, recordId, fieldId) };
  }

  /** Ends the indicator on `tableId` (only if it is still on that cell, when named). */
  stop(tableId: string, recordId?: string, fieldId?: string): void {
    const a = this.active.get(tableId);
    if (!a) return;
    if (recordId !== undefined && (a.recordId !== recordId || a.fieldId !== fieldId)) return;
    this.clear(tableId);
    this.send("editing", { tableId, recordId: a.recordId, fieldId: a.fieldId, state: "stop" });
  }

  /** The cell the user edits on `tableId`, if any. */
  current(tableId: string): { recordId: string; fieldId: string } | undefined {
    const a = this.active.get(tableId);
    return a && { recordId: a.recordId, fieldId: a.fieldId };
  }

  /** Announces the indicator again (after the table was joined on a new connection). */
  resend(tableId: string): void {
    const a = this.active.get(tableId);
    if (a) this.send("editing", { tableId, recordId: a.recordId, fieldId: a.fieldId, state: "start" });
  }

  /** Drops the indicator without a frame (the table was left: the server ended it). */
  forget(tableId: string): void {
    this.clear(tableId);
  }

  private clear(tableId: string): void {
    const a = this.active.get(tableId);
    if (a) clearInterval(a.timer);
    this.active.delete(tableId);
  }
}
