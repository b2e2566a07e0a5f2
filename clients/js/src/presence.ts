/**
 * Who is on each table, with their cursors, selections, editing cells and
 * viewports, kept from the presence frames (`table_users`, `user_joined`,
 * `user_reconnected`, `user_left`, `cursor_position`, `selection`, and
 * v1.3 `user_editing`, `user_viewport`).
 */
import { Cursor, Selection, UserEditing, UserPresence, Viewport } from "./wire.js";

export type PresenceEvent =
  | { kind: "users"; tableId: string; users: UserPresence[] }
  | { kind: "joined"; tableId: string; user: UserPresence }
  | { kind: "left"; tableId: string; userId: string }
  | { kind: "cursor"; tableId: string; userId: string; cursor: Cursor }
  | { kind: "selection"; tableId: string; userId: string; selection: Selection }
  | { kind: "editing"; tableId: string; editing: UserEditing }
  | { kind: "viewport"; tableId: string; userId: string; viewport: Viewport };

/** A cell another user edits now. */
export interface EditingCell {
  userId: string;
  color: string;
  recordId: string;
  fieldId: string;
}

export class Presence {
  private tables = new Map<string, Map<string, UserPresence>>();

  users(tableId: string): UserPresence[] {
    return [...(this.tables.get(tableId)?.values() ?? [])];
  }

  /** Who edits which cell of a table now (from `user_editing` and `table_users`). */
  editing(tableId: string): EditingCell[] {
    const out: EditingCell[] = [];
    for (const u of this.tables.get(tableId)?.values() ?? []) {
      if (u.editing) out.push({ userId: u.userId, color: u.color, recordId: u.editing.recordId, fieldId: u.editing.fieldId });
    }
    return out;
  }

  forget(tableId: string): void {
    this.tables.delete(tableId);
  }

  /**
   * Applies a presence frame; returns what changed, or nothing for a frame
   * that is not presence or names no table (an empty `table_users` cannot
   * be: the joining user is in it).
   */
  apply(event: string, data: unknown): PresenceEvent | undefined {
    switch (event) {
      case "table_users": {
        const users = Array.isArray(data) ? (data as UserPresence[]) : [];
        const tableId = users[0]?.tableId;
        if (!tableId) return undefined;
        this.tables.set(tableId, new Map(users.map((u) => [u.userId, u])));
        return { kind: "users", tableId, users };
      }
      case "user_joined":
      case "user_reconnected": {
        const user = data as UserPresence;
        if (!user?.tableId) return undefined;
        this.table(user.tableId).set(user.userId, user);
        return { kind: "joined", tableId: user.tableId, user };
      }
      case "user_left": {
        const { userId, tableId } = (data ?? {}) as { userId: string; tableId: string };
        if (!tableId) return undefined;
        this.tables.get(tableId)?.delete(userId);
        return { kind: "left", tableId, userId };
      }
      case "cursor_position": {
        const d = (data ?? {}) as { userId: string; tableId: string; cursor: Cursor };
        const u = this.tables.get(d.tableId)?.get(d.userId);
        if (u) u.cursor = d.cursor;
        return d.tableId ? { kind: "cursor", tableId: d.tableId, userId: d.userId, cursor: d.cursor } : undefined;
      }
      case "selection": {
        const d = (data ?? {}) as { userId: string; tableId: string; selection: Selection };
        const u = this.tables.get(d.tableId)?.get(d.userId);
        if (u) u.selection = d.selection;
        return d.tableId ? { kind: "selection", tableId: d.tableId, userId: d.userId, selection: d.selection } : undefined;
      }
      case "user_editing": {
        const d = (data ?? {}) as UserEditing;
        if (!d.tableId) return undefined;
        const u = this.tables.get(d.tableId)?.get(d.userId);
        if (u && d.state === "start") u.editing = { recordId: d.recordId, fieldId: d.fieldId };
        const same = u?.editing?.recordId === d.recordId && u?.editing?.fieldId === d.fieldId;
        if (u && d.state === "stop" && same) u.editing = null;
        return { kind: "editing", tableId: d.tableId, editing: d };
      }
      case "user_viewport": {
        const d = (data ?? {}) as { userId: string; tableId: string; viewport: Viewport };
        if (!d.tableId) return undefined;
        const u = this.tables.get(d.tableId)?.get(d.userId);
        if (u) u.viewport = d.viewport;
        return { kind: "viewport", tableId: d.tableId, userId: d.userId, viewport: d.viewport };
      }
      default:
        return undefined;
    }
  }

  private table(tableId: string): Map<string, UserPresence> {
    let t = this.tables.get(tableId);
    if (!t) this.tables.set(tableId, (t = new Map()));
    return t;
  }
}
