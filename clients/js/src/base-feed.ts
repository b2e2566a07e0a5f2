/**
 * Base-level events (docs/protocol.md 3.2): a base renamed, its icon changed, a
 * table added. They come on the connection once per base, whatever number
 * of the base's tables it follows, as change events with a `baseId` and no
 * `tableId`. LiveTable never sees them; the client emits them as `base`.
 *
 * Each base has its own recovery position (the id of the last base event
 * received, or the base stream's start from the first subscribe ack that
 * named the base); it only moves forward, and every join of a table of the
 * base sends it as `baseLastEventId`, so what was missed while away is
 * replayed once. A repeat (an id at or before the position) is dropped.
 */
import { Emitter } from "./emitter.js";
import { compareIds } from "./stream-id.js";
import { ChangeEvent } from "./wire.js";

export interface BaseFeedEvents {
  base: { baseId: string; event: ChangeEvent };
  /** The base's history is gone: reload what the app shows of the base. */
  resync: { baseId: string; reason: string };
}

export class BaseFeeds extends Emitter<BaseFeedEvents> {
  private positions = new Map<string, string>();
  /** The base stream's start given by the latest subscribe ack. */
  private starts = new Map<string, string>();

  /** The recovery position of `baseId`, if any. */
  position(baseId: string): string | undefined {
    return this.positions.get(baseId);
  }

  /** A subscribe ack named the base: its stream's start on this connection. */
  joined(baseId: string, start: string | undefined): void {
    if (start === undefined) return;
    this.starts.set(baseId, start);
    if (!this.positions.has(baseId)) this.positions.set(baseId, start);
  }

  /** True when `event` is a base event (it was handled here). */
  receive(event: ChangeEvent): boolean {
    if (typeof event.tableId === "string" || typeof event.baseId !== "string") return false;
    const baseId = event.baseId;
    const at = this.positions.get(baseId);
    if (at !== undefined && compareIds(event.id, at) <= 0) return true; // a repeat
    this.positions.set(baseId, event.id);
    this.emit("base", { baseId, event });
    return true;
  }

  /** `resync_required {baseId}`: the position jumps to the join's start. */
  resync(baseId: string, reason: string): void {
    const start = this.starts.get(baseId);
    if (start !== undefined) this.positions.set(baseId, start);
    else this.positions.delete(baseId);
    this.emit("resync", { baseId, reason });
  }
}
