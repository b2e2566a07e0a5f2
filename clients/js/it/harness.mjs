// Shared by the integration tests that tests/sdk.rs runs against real
// sidecars: options from the environment, waiting on conditions, and
// reading a table's whole state with load_records.
import WebSocket from "ws";
import { MemoryStorage, RtsyncClient } from "../dist/index.js";

export const URLS = (process.env.RTSYNC_URLS ?? "").split(",").filter(Boolean);
export const TOKENS = JSON.parse(process.env.RTSYNC_TOKENS ?? "{}");

/** A client of `user` on sidecar `i`, with fast reconnects for tests. */
export function client(user, i = 0, extra = {}) {
  return new RtsyncClient({
    url: URLS[i % URLS.length], token: TOKENS[user], WebSocket, storage: new MemoryStorage(),
    backoffBaseMs: 50, backoffMaxMs: 1_000, retryBaseMs: 50, retryMaxMs: 500, requestTimeoutMs: 5_000, ...extra,
  });
}

/** Waits until `check()` is truthy, or fails with `what` after `ms`. */
export async function until(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every record rtsync holds for a table, by paging load_records. */
export async function loadAll(c, tableId) {
  const out = [];
  let after;
  for (;;) {
    const page = await c.request("load_records", { tableId, after, limit: 1000 });
    out.push(...page.records);
    if (!page.next) return out;
    after = page.next;
  }
}

/** A record's comparable form. */
export const plain = (r) => ({ recordId: r.recordId, version: r.version, deleted: !!r.deleted, fields: sortKeys(r.fields) });
function sortKeys(o) {
  return Object.fromEntries(Object.keys(o ?? {}).sort().map((k) => [k, o[k]]));
}
