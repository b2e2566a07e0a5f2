// Presence kept from the presence frames, and the outbox's storages.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "../dist/presence.js";
import { MemoryStorage, defaultStorage } from "../dist/storage.js";

const user = (userId, tableId, extra = {}) => ({ userId, userName: userId, tableId, viewId: "v", lastSeen: 0, color: "#000", ...extra });

test("table_users replaces a table's users; joins, leaves and cursors update them", () => {
  const p = new Presence();
  assert.deepEqual(p.apply("table_users", [user("a", "t1"), user("b", "t1")]), {
    kind: "users", tableId: "t1", users: [user("a", "t1"), user("b", "t1")],
  });
  assert.equal(p.apply("user_joined", user("c", "t1")).kind, "joined");
  assert.equal(p.apply("user_reconnected", user("a", "t1")).kind, "joined");
  assert.deepEqual(p.users("t1").map((u) => u.userId).sort(), ["a", "b", "c"]);
  assert.deepEqual(p.apply("user_left", { userId: "b", tableId: "t1" }), { kind: "left", tableId: "t1", userId: "b" });
  const cursor = { recordId: "r1", fieldId: "f1" };
  assert.deepEqual(p.apply("cursor_position", { userId: "a", tableId: "t1", cursor }), {
    kind: "cursor", tableId: "t1", userId: "a", cursor,
  });
  assert.deepEqual(p.users("t1").find((u) => u.userId === "a").cursor, cursor);
  const selection = { startRecordId: "r1", startFieldId: "f1", endRecordId: "r2", endFieldId: "f2" };
  assert.equal(p.apply("selection", { userId: "c", tableId: "t1", selection }).kind, "selection");
  assert.deepEqual(p.users("t1").find((u) => u.userId === "c").selection, selection);
  // A later table_users starts the table afresh.
  p.apply("table_users", [user("z", "t1")]);
  assert.deepEqual(p.users("t1").map((u) => u.userId), ["z"]);
});

test("tables are kept apart, and forget drops one", () => {
  const p = new Presence();
  p.apply("table_users", [user("a", "t1")]);
  p.apply("table_users", [user("b", "t2")]);
  assert.deepEqual(p.users("t1").map((u) => u.userId), ["a"]);
  p.forget("t1");
  assert.deepEqual(p.users("t1"), []);
  assert.deepEqual(p.users("t2").map((u) => u.userId), ["b"]);
});

test("frames that name no table are ignored (an empty table_users names none)", () => {
  const p = new Presence();
  assert.equal(p.apply("table_users", []), undefined);
  assert.equal(p.apply("user_joined", { userId: "x" }), undefined);
  assert.equal(p.apply("user_left", { userId: "x" }), undefined);
  assert.equal(p.apply("cursor_position", { userId: "x" }), undefined);
  assert.equal(p.apply("record_change", {}), undefined, "not presence");
});

const edit = (id, seq) => ({
  clientChangeId: id, tableId: "t", recordId: "r", type: "update",
  changes: [{ fieldId: "f", newValue: seq }], createdAt: 1000, seq,
});

test("MemoryStorage keeps, replaces by clientChangeId and removes edits", async () => {
  const s = new MemoryStorage();
  await s.put(edit("a", 1));
  await s.put(edit("b", 2));
  await s.put({ ...edit("a", 1), version: 7 });
  let all = await s.load();
  assert.equal(all.length, 2);
  assert.equal(all.find((e) => e.clientChangeId === "a").version, 7);
  await s.remove(["a", "missing"]);
  all = await s.load();
  assert.deepEqual(all.map((e) => e.clientChangeId), ["b"]);
});

test("without IndexedDB (Node) the default storage is in memory", async () => {
  const s = defaultStorage("rtsync-outbox:test");
  await s.put(edit("x", 1));
  assert.deepEqual((await s.load()).map((e) => e.clientChangeId), ["x"]);
});
