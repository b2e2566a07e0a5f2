// The SDK against real sidecars (run by tests/sdk.rs): authentication,
// going offline and back, permanent refusals, and what the app receives.
import { test } from "node:test";
import assert from "node:assert/strict";
import { client, until, loadAll, plain, URLS, TOKENS } from "./harness.mjs";

const unhandled = [];
process.on("unhandledRejection", (e) => unhandled.push(String(e)));
test.afterEach(() => assert.deepEqual(unhandled.splice(0), [], "no unhandled rejection"));

test("a refused token stops the client as unauthorized with the close code, and it never loops", async () => {
  const c = client("expired");
  const statuses = [];
  c.on("status", (s) => statuses.push(s));
  await assert.rejects(c.connect(), (e) => e.code === "unauthenticated");
  await new Promise((r) => setTimeout(r, 1_000));
  assert.equal(c.status, "unauthorized");
  const last = statuses.at(-1);
  assert.equal(last.closeCode, 4401);
  assert.ok(last.error, "the status carries the error");
  assert.equal(statuses.filter((s) => s.status === "connecting").length, 1, "one attempt, no reconnect loop");
});

test("getToken is asked at connect and again after a refusal; the fresh token connects", async () => {
  const tokens = [TOKENS.expired, TOKENS.alice];
  let asked = 0;
  const c = client("alice", 0, { token: undefined, getToken: async () => tokens[Math.min(asked++, 1)] });
  await c.connect();
  assert.equal(asked, 2);
  assert.equal(c.userId, "alice");
  c.disconnect();
});

test("going offline and back online back to back is online again at once", async () => {
  const c = client("alice");
  await c.connect();
  c.setOffline(true);
  c.setOffline(false);
  const began = Date.now();
  await until("online", () => c.status === "online", 5_000);
  assert.ok(Date.now() - began < 2_000, `online after ${Date.now() - began} ms`);
  const sub = await c.subscribe("t-toggle");
  assert.equal(sub.active, true);
  c.disconnect();
});

test("an edit refused for good settles as rejected and never blocks the offline edits after it", async () => {
  const c = client("alice");
  const rollbacks = [];
  c.on("rollback", (s) => rollbacks.push(s.edit.tableId));
  // Queued offline: a table alice may only read, then one she may write.
  const refused = c.change("t-readonly", "r1", [{ fieldId: "f", newValue: 1 }]);
  const valid = c.change("t-perm", "r1", [{ fieldId: "f", newValue: 2 }]);
  await c.connect();
  const [r1, r2] = await Promise.all([refused, valid]);
  assert.equal(r1.status, "rejected");
  assert.equal(r1.error.code, "forbidden");
  assert.equal(r2.status, "applied");
  assert.deepEqual(rollbacks, ["t-readonly"]);
  assert.equal(c.outbox.pending().length, 0);
  // Reconnecting sends nothing again.
  c.dropConnection();
  await until("back online", () => c.status === "online");
  assert.equal(c.outbox.pending().length, 0);
  c.disconnect();
});

test("an offline edit the server answers overwritten settles as overwritten, with their value", async () => {
  const a = client("alice", 0);
  const b = client("bob", 1);
  await a.connect();
  await b.connect();
  const first = await a.change("t-over", "r1", [{ fieldId: "f", newValue: "a1" }], { version: 0 });
  a.setOffline(true);
  await b.change("t-over", "r1", [{ fieldId: "f", newValue: "theirs" }], { version: first.version });
  const mine = a.change("t-over", "r1", [{ fieldId: "f", newValue: "mine" }], { version: first.version });
  a.setOffline(false);
  const r = await mine;
  assert.equal(r.status, "overwritten");
  assert.deepEqual(r.conflicts, [{ fieldId: "f", theirValue: "theirs" }]);
  a.disconnect();
  b.disconnect();
});

test("across reconnects the app gets every other user's event once, in order, and never its own", async () => {
  const a = client("alice", 0);
  const b = client("bob", 1);
  await a.connect();
  await b.connect();
  const got = [];
  a.on("change", (e) => got.push(e.id));
  await a.subscribe("t-echo");
  const theirs = [];
  const mine = [];
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < 5; i++) {
      const r = await b.change("t-echo", `r${i}`, [{ fieldId: "f", newValue: `${round}-${i}` }]);
      theirs.push(r.eventId);
      mine.push(a.change("t-echo", `m${i}`, [{ fieldId: "f", newValue: round }]));
    }
    if (round % 2 === 0) a.dropConnection();
    else a.setOffline(round % 3 === 0);
    if (round % 3 === 0) a.setOffline(false);
  }
  a.setOffline(false);
  const own = (await Promise.all(mine)).map((r) => r.eventId);
  await until("every event of bob", () => got.length >= theirs.length);
  await new Promise((r) => setTimeout(r, 300)); // nothing more may arrive
  assert.deepEqual(got, theirs, "bob's events, once each, in stream order");
  assert.ok(own.every((id) => !got.includes(id)), "no own edit echoed");
  a.disconnect();
  b.disconnect();
});

test("a subscription reports whether its rejoin recovered every missed event", async () => {
  const a = client("alice", 0);
  await a.connect();
  const sub = await a.subscribe("t-recover");
  assert.equal(sub.recovered, false, "a first join recovers nothing");
  const rejoined = new Promise((r) => a.once("subscribed", r));
  a.dropConnection();
  const s = await rejoined;
  assert.equal(s.recovered, true);
  assert.equal(sub.recovered, true);
  a.disconnect();
});
test("a subscription the server refuses rejects with its code and is not joined again", async () => {
  const c = client("outsider");
  await c.connect();
  await assert.rejects(c.subscribe("t-secret"), (e) => e.code === "forbidden");
  const errors = [];
  const table = c.table("t-secret-2");
  table.on("error", ({ error }) => errors.push(error.code));
  await until("the live table reports the refusal", () => errors.length === 1);
  assert.deepEqual(errors, ["forbidden"]);
  const ok = await c.subscribe("t-open");
  assert.equal(ok.active, true);
  c.disconnect();
});

test("on resync_required a live table reloads by itself and ends equal to load_records", async () => {
  const a = client("alice", 0);
  const b = client("bob", 1);
  await a.connect();
  await b.connect();
  const table = a.table("t-resync");
  await table.ready;
  await b.change("t-resync", "r0", [{ fieldId: "f", newValue: "before" }]);
  await until("the first edit", () => table.get("r0")?.fields.f === "before");
  a.setOffline(true);
  // More than a recovery replays (10,000 events): the join answers resync_required.
  for (let batch = 0; batch < 11; batch++) {
    const changes = Array.from({ length: 1000 }, (_, i) => ({
      type: "update", entityId: `r${i % 50}`, tableId: "t-resync", clientChangeId: `resync-${batch}-${i}`,
      changes: [{ fieldId: "f", newValue: batch * 1000 + i }],
    }));
    await b.request("sync_offline_changes", changes);
  }
  const reloads = [];
  table.on("reload", ({ reason }) => reloads.push(reason));
  a.setOffline(false);
  await until("the reload", () => reloads.length === 1 && table.isSettled(), 30_000);
  assert.deepEqual(reloads, ["history_too_long"]);
  const expected = (await loadAll(a, "t-resync")).map(plain);
  assert.deepEqual(table.snapshot().map(plain), expected);
  assert.equal(table.get("r49").fields.f, 10_999);
  a.disconnect();
  b.disconnect();
});

test("undo reverts the user's own edit, leaves a colleague's, and redo brings it back", async () => {
  const a = client("alice", 0);
  const b = client("bob", 1);
  await a.connect();
  await b.connect();
  const table = a.table("t-undo");
  await table.ready;
  await b.change("t-undo", "r1", [{ fieldId: "f", newValue: "a" }, { fieldId: "g", newValue: "a" }], { type: "create" });
  await until("bob's record", () => table.get("r1")?.fields.f === "a");
  assert.equal(table.canUndo, false);
  await table.set("r1", { f: "b", g: "b" });
  assert.equal(table.canUndo, true);
  await b.change("t-undo", "r1", [{ fieldId: "g", newValue: "bob's" }]);
  await until("bob's edit", () => table.get("r1")?.fields.g === "bob's");
  const undone = await table.undo();
  assert.equal(undone.status, "partial");
  assert.deepEqual(undone.skipped, [{ recordId: "r1", fieldId: "g", reason: "changed", by: "bob", theirValue: "bob's" }]);
  assert.deepEqual(table.get("r1").fields, { f: "a", g: "bob's" });
  assert.equal(table.canRedo, true);
  const redone = await table.redo();
  assert.equal(redone.status, "applied");
  assert.deepEqual(table.get("r1").fields, { f: "b", g: "bob's" });
  const expected = (await loadAll(a, "t-undo")).map(plain);
  assert.deepEqual(table.snapshot().map(plain), expected);
  a.disconnect();
  b.disconnect();
});

assert.ok(URLS.length >= 2, "RTSYNC_URLS names two sidecars");

test("v1.3: another user's editing cell shows in table.editing across sidecars, comes back after their reconnect, and goes on stop", async () => {
  const alice = client("alice", 0);
  const bob = client("bob", 1, { editingRenewMs: 500 });
  await Promise.all([alice.connect(), bob.connect()]);
  const at = alice.table("sdk-editing");
  const bt = bob.table("sdk-editing");
  await Promise.all([at.ready, bt.ready]);
  await until("alice sees bob", () => alice.users("sdk-editing").some((u) => u.userId === "bob"));
  const seen = [];
  at.on("editing", (e) => seen.push(e.state));
  const h = bt.startEditing("r1", "name");
  const bobEditing = () => at.editing.some((e) => e.userId === "bob" && e.recordId === "r1" && e.fieldId === "name");
  await until("bob's cell in alice's table.editing", bobEditing);
  assert.deepEqual(bt.editing, [], "not one's own");
  bob.dropConnection();
  await until("the stop of the dropped connection", () => seen.includes("stop"));
  await until("bob's cell again after his reconnect", bobEditing);
  h.stop();
  await until("gone on stop", () => !at.editing.some((e) => e.userId === "bob"));
  alice.disconnect();
  bob.disconnect();
});
