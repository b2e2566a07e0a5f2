// The frame router: every frame goes to the table it names, whatever was
// joined last (docs/protocol.md sections 3.1, 3.2 and 4).
import { test } from "node:test";
import assert from "node:assert/strict";
import { routeFrame } from "../dist/router.js";

const ev = (id, tableId, extra = {}) => ({ id, type: "update", entityType: "record", entityId: "r", tableId, userId: "u", timestamp: 0, version: 1, ...extra });
const ids = (m) => Object.fromEntries([...m].map(([t, list]) => [t, list.map((e) => e.id)]));

test("a batch of two tables' events is split by table, each in arrival order", () => {
  const r = routeFrame("batch_changes", [ev("1-0", "a"), ev("2-0", "b"), ev("3-0", "a"), ev("4-0", "b")]);
  assert.equal(r.kind, "events");
  assert.deepEqual(ids(r.byTable), { a: ["1-0", "3-0"], b: ["2-0", "4-0"] });
  assert.deepEqual(r.base, []);
});

test("record_change and missed_events go to their event's table", () => {
  assert.deepEqual(ids(routeFrame("record_change", ev("5-0", "t2")).byTable), { t2: ["5-0"] });
  assert.deepEqual(ids(routeFrame("missed_events", [ev("6-0", "t3")]).byTable), { t3: ["6-0"] });
});

test("base events (a baseId and no tableId) go to the base feeds", () => {
  const r = routeFrame("batch_changes", [ev("1-0", undefined, { baseId: "B", entityType: "base" }), ev("2-0", "t")]);
  assert.deepEqual(r.base.map((e) => e.id), ["1-0"]);
  assert.deepEqual(ids(r.byTable), { t: ["2-0"] });
});

test("events without an id or any table are dropped, never guessed", () => {
  const r = routeFrame("batch_changes", [{ tableId: "t" }, ev("1-0", undefined), null, 5, "x"]);
  assert.equal(r.byTable.size, 0);
  assert.equal(r.base.length, 0);
});

test("recent_changes goes to the table its events name, not to the last one joined", () => {
  const r = routeFrame("recent_changes", [ev("1-0", "first"), ev("2-0", "first")]);
  assert.deepEqual(r, { kind: "history", tableId: "first", events: [ev("1-0", "first"), ev("2-0", "first")] });
  assert.equal(routeFrame("recent_changes", []).kind, "unroutable");
  assert.equal(routeFrame("recent_changes", [ev("1-0", "a"), ev("2-0", "b")]).kind, "unroutable");
});

test("connection_recovered and resync_required name their table or base", () => {
  assert.deepEqual(routeFrame("connection_recovered", { tableId: "t", lastEventId: "9-0", missedEventsCount: 3 }), {
    kind: "recovered", tableId: "t", lastEventId: "9-0", missedEventsCount: 3,
  });
  assert.deepEqual(routeFrame("resync_required", { tableId: "t", reason: "history_trimmed" }), {
    kind: "resync", tableId: "t", reason: "history_trimmed",
  });
  assert.deepEqual(routeFrame("resync_required", { baseId: "B", reason: "stream_reset" }), {
    kind: "baseResync", baseId: "B", reason: "stream_reset",
  });
  assert.equal(routeFrame("resync_required", { reason: "x" }).kind, "unroutable");
  assert.equal(routeFrame("connection_recovered", {}).kind, "unroutable");
});

test("presence frames carry their table; an empty table_users names none", () => {
  const users = [{ userId: "a", tableId: "t2" }];
  assert.deepEqual(routeFrame("table_users", users), { kind: "presence", event: "table_users", tableId: "t2", data: users });
  assert.equal(routeFrame("table_users", []).kind, "unroutable");
  for (const e of ["user_joined", "user_reconnected", "user_left", "cursor_position", "selection"]) {
    assert.equal(routeFrame(e, { userId: "a", tableId: "t" }).tableId, "t", e);
    assert.equal(routeFrame(e, { userId: "a" }).kind, "unroutable", e);
  }
});

test("errors are reported; answers and unknown frames are ignored", () => {
  assert.deepEqual(routeFrame("error", { code: "forbidden", message: "no" }), { kind: "error", code: "forbidden", message: "no" });
  assert.deepEqual(routeFrame("error", null), { kind: "error", code: "internal", message: "" });
  for (const e of ["offline_changes", "offline_sync_complete", "authenticated", "heartbeat_ack", "something_new"]) {
    assert.equal(routeFrame(e, {}).kind, "ignored", e);
  }
});

import { LatestWins, jwtSubject } from "../dist/index.js";

test("LatestWins sends at once, then at most once per interval, the latest value", async () => {
  const sent = [];
  const lw = new LatestWins(20, (v) => sent.push(v)); // one per 50 ms
  lw.push(1);
  lw.push(2);
  lw.push(3);
  assert.deepEqual(sent, [1]);
  const deadline = Date.now() + 2000;
  while (sent.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(sent, [1, 3], "2 was replaced by 3 while waiting");
});

test("jwtSubject reads the sub claim, and nothing of a malformed token", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  assert.equal(jwtSubject(`${b64({ alg: "HS256" })}.${b64({ sub: "ada" })}.sig`), "ada");
  assert.equal(jwtSubject("not-a-jwt"), undefined);
  assert.equal(jwtSubject(`x.${b64({ sub: 5 })}.y`), undefined);
});
