// Editing indicators and viewports (docs/protocol.md 3.4): this user's
// indicator renewed until stopped, others' kept from the presence frames,
// and LiveTable's `editing`, `startEditing` and `viewport`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LiveTable, MemoryStorage, Outbox, OwnEditing, Presence, Subscription, routeFrame } from "../dist/index.js";
import { FakeLink } from "./fake.mjs";

const user = (userId, extra = {}) => ({ userId, userName: userId, tableId: "t", lastSeen: 0, color: "#123", ...extra });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function recorder() {
  const sent = [];
  return { sent, send: (event, data) => (sent.push([event, data]), true) };
}

test("a started indicator is announced at once and renewed until it is stopped", async () => {
  const r = recorder();
  const own = new OwnEditing(r.send, 20);
  const handle = own.start("t", "r1", "f1");
  assert.deepEqual(r.sent[0], ["editing", { tableId: "t", recordId: "r1", fieldId: "f1", state: "start" }]);
  await sleep(70);
  const starts = r.sent.filter(([, d]) => d.state === "start").length;
  assert.ok(starts >= 3, `renewed (${starts} starts)`);
  handle.stop();
  const stop = r.sent.at(-1);
  assert.deepEqual(stop, ["editing", { tableId: "t", recordId: "r1", fieldId: "f1", state: "stop" }]);
  const after = r.sent.length;
  await sleep(60);
  assert.equal(r.sent.length, after, "no renewal after stop");
  handle.stop();
  assert.equal(r.sent.length, after, "a second stop sends nothing");
});

test("starting another cell moves the indicator; the old handle no longer stops it", () => {
  const r = recorder();
  const own = new OwnEditing(r.send, 1000);
  const first = own.start("t", "r1", "f1");
  own.start("t", "r2", "f1");
  first.stop();
  assert.equal(r.sent.filter(([, d]) => d.state === "stop").length, 0);
  assert.deepEqual(own.current("t"), { recordId: "r2", fieldId: "f1" });
  own.stop("t");
  assert.equal(own.current("t"), undefined);
});

test("an indicator is announced again after a reconnect, and forgotten without a frame", () => {
  const r = recorder();
  const own = new OwnEditing(r.send, 1000);
  own.start("t", "r1", "f1");
  own.resend("t");
  assert.equal(r.sent.length, 2);
  own.forget("t");
  own.resend("t");
  own.stop("t");
  assert.equal(r.sent.length, 2, "nothing after forget");
});

test("others' editing cells are kept from user_editing and table_users", () => {
  const p = new Presence();
  p.apply("table_users", [user("a"), user("b", { editing: { recordId: "r9", fieldId: "f" } })]);
  assert.deepEqual(p.editing("t"), [{ userId: "b", color: "#123", recordId: "r9", fieldId: "f" }]);
  const start = { userId: "a", color: "#123", tableId: "t", recordId: "r1", fieldId: "status", state: "start" };
  assert.deepEqual(p.apply("user_editing", start), { kind: "editing", tableId: "t", editing: start });
  assert.equal(p.editing("t").length, 2);
  p.apply("user_editing", { ...start, recordId: "r0", state: "stop" });
  assert.equal(p.editing("t").length, 2, "a stop of another cell changes nothing");
  p.apply("user_editing", { ...start, state: "stop" });
  p.apply("user_left", { userId: "b", tableId: "t" });
  assert.deepEqual(p.editing("t"), []);
});

test("a viewport is kept on the user", () => {
  const p = new Presence();
  p.apply("table_users", [user("a")]);
  const viewport = { firstRecordId: "r10", lastRecordId: "r19" };
  assert.equal(p.apply("user_viewport", { userId: "a", tableId: "t", viewport }).kind, "viewport");
  assert.deepEqual(p.users("t")[0].viewport, viewport);
});

test("user_editing and user_viewport are routed to presence by their table", () => {
  const r = routeFrame("user_editing", { userId: "a", tableId: "t2", recordId: "r", fieldId: "f", state: "start" });
  assert.equal(r.kind, "presence");
  assert.equal(r.tableId, "t2");
  assert.equal(routeFrame("user_viewport", { userId: "a", tableId: "t3", viewport: {} }).tableId, "t3");
  assert.equal(routeFrame("user_editing", { userId: "a" }).kind, "unroutable");
});

test("a LiveTable answers editing, startEditing and viewport through its client", async () => {
  const link = new FakeLink();
  const outbox = new Outbox(link, new MemoryStorage(), { maxBatch: 100, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 });
  await outbox.start();
  const sub = new Subscription("t", undefined, { isPending: (id) => outbox.has(id) });
  const r = recorder();
  const own = new OwnEditing(r.send, 1000);
  const cells = [{ userId: "b", color: "#f00", recordId: "r1", fieldId: "f" }];
  const host = {
    outbox, request: (e, d) => link.request(e, d), whenOnline: async () => undefined,
    editing: (t) => (t === "t" ? cells : []),
    startEditing: (t, rec, f) => own.start(t, rec, f),
    stopEditing: (t, rec, f) => own.stop(t, rec, f),
    viewport: (t, v) => r.send("viewport", { tableId: t, ...v }),
  };
  const table = new LiveTable("t", host, sub);
  assert.deepEqual(table.editing, cells);
  const seen = [];
  table.on("editing", (e) => seen.push(e.state));
  table.editingFrame({ userId: "b", color: "#f00", tableId: "t", recordId: "r1", fieldId: "f", state: "stop" });
  assert.deepEqual(seen, ["stop"]);
  const h = table.startEditing("r2", "g");
  h.stop();
  table.viewport({ recordIds: ["r1", "r2"] });
  assert.deepEqual(r.sent.map(([e, d]) => [e, d.state ?? d.recordIds]), [
    ["editing", "start"], ["editing", "stop"], ["viewport", ["r1", "r2"]],
  ]);
  table.close();
});
