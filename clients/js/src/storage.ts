/**
 * Where the outbox keeps edits until the server has answered them: in
 * IndexedDB in browsers (they survive a reload or a crash of the tab) and in
 * memory elsewhere. Apps may pass their own `OutboxStorage` (e.g. a file or
 * SQLite in Node, AsyncStorage in React Native).
 */
import { FieldChange, Json } from "./wire.js";

/** One edit as the outbox holds it, and as storages persist it. */
export interface QueuedEdit {
  clientChangeId: string;
  tableId: string;
  recordId: string;
  type: "create" | "update" | "delete";
  changes: FieldChange[];
  metadata?: { [k: string]: Json };
  baseId?: string;
  /** The record version the edit is based on; absent: last write wins. */
  version?: number;
  /**
   * Set by LiveTable: the edit was based on the user's own earlier pending
   * edits of the record, so it moves to their committed version.
   */
  rebase?: boolean;
  /** Unix milliseconds when the edit was made; also the order of a reload. */
  createdAt: number;
  /** Order among edits made in the same millisecond. */
  seq: number;
}

/** Durable storage for queued edits. Calls are made one at a time, in order. */
export interface OutboxStorage {
  /** Every stored edit (any order: the outbox sorts them). */
  load(): Promise<QueuedEdit[]>;
  /** Stores or replaces an edit (by `clientChangeId`). */
  put(edit: QueuedEdit): Promise<void>;
  remove(clientChangeIds: string[]): Promise<void>;
}

export class MemoryStorage implements OutboxStorage {
  private items = new Map<string, QueuedEdit>();
  async load() {
    return [...this.items.values()];
  }
  async put(edit: QueuedEdit) {
    this.items.set(edit.clientChangeId, { ...edit });
  }
  async remove(ids: string[]) {
    for (const id of ids) this.items.delete(id);
  }
}

/** IndexedDB, one database per name (the client names it per server and user). */
export class IndexedDbStorage implements OutboxStorage {
  private db?: Promise<IDBDatabase>;
  constructor(private name: string) {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const req = indexedDB.open(this.name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("edits", { keyPath: "clientChangeId" });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    return this.db;
  }

  private async tx<T>(mode: IDBTransactionMode, f: (s: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const t = db.transaction("edits", mode);
      const req = f(t.objectStore("edits"));
      t.oncomplete = () => resolve(req ? (req.result as T) : undefined);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  }

  async load() {
    return (await this.tx<QueuedEdit[]>("readonly", (s) => s.getAll())) ?? [];
  }
  async put(edit: QueuedEdit) {
    await this.tx("readwrite", (s) => void s.put(edit));
  }
  async remove(ids: string[]) {
    await this.tx("readwrite", (s) => {
      for (const id of ids) s.delete(id);
    });
  }
}

/** IndexedDB where there is one, else memory. */
export function defaultStorage(name: string): OutboxStorage {
  return typeof indexedDB !== "undefined" ? new IndexedDbStorage(name) : new MemoryStorage();
}
