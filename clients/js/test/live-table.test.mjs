// LiveTable's version rule and optimistic edits, with a fake connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LiveTable, MemoryStorage, Outbox, Subscription } from "../dist/index.js";
import { FakeLink } from "./fake.mjs";

async function setup(records, grant = {}) {
  const link = new FakeLink();
  const outbox = new Outbox(link, new MemoryStorage(), { maxBatch: 100, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 });
  await outbox.start();
  const sub = new Subscription("t", undefined, { isPending: (id) => outbox.has(id) });
  outbox.on("settled", ({ result }) => result.eventId && sub.acked(result.eventId));
  const host = { outbox, request: (e, d) => link.request(e, d), whenOnline: async () => undefined };
  const table = new LiveTable("t", host, sub, { gapWaitMs: 10_000 });
  sub.joined({ tableId: "t", lastEventId: "1-0", color: "#000", ...grant });
  const load = await link.next();
  assert.equal(load.event, "load_records");
  load.resolve({ records, asOf: "1-0" });
  await table.ready;
  return { link, table, sub, outbox };
}

const event = (id, version, changes, type = "update") => ({
  id, type, entityType: "record", entityId: "r1", tableId: "t", userId: "other", timestamp: 0, version, changes,
});

test("an own acked edit waits for another writer's older event before it is applied", async () => {
  const { link, table, sub } = await setup([{ recordId: "r1", version: 1, deleted: false, fields: { a: 1 } }]);
  const done = table.set("r1", { b: 2 });
  assert.deepEqual(table.get("r1").fields, { a: 1, b: 2 }, "drawn at once");
  assert.equal(table.get("r1").pending, 1);
  const req = await link.next();
  assert.equal(req.data.version, 1, "based on the version shown");
  // Another writer committed version 2 first; ours is version 3 (merged).
  req.resolve({ status: "merged", eventId: "3-0", version: 3, clientChangeId: req.data.clientChangeId });
  await done;
  assert.deepEqual(table.get("r1").fields, { a: 1, b: 2 }, "still shown while version 2 is on its way");
  assert.equal(table.isSettled(), false, "version 3 waits for its base");
  sub.receive([event("2-0", 2, [{ fieldId: "c", newValue: 3 }])]);
  assert.deepEqual(table.get("r1"), { recordId: "r1", version: 3, deleted: false, fields: { a: 1, b: 2, c: 3 }, pending: 0 });
  assert.equal(table.isSettled(), true);
});

test("events are applied in version order and repeats or older ones are ignored", async () => {
  const { table, sub } = await setup([{ recordId: "r1", version: 4, deleted: false, fields: { a: 1 } }]);
  sub.receive([event("5-0", 4, [{ fieldId: "a", newValue: "old" }]), event("6-0", 5, [{ fieldId: "a", newValue: 5 }])]);
  assert.deepEqual(table.get("r1").fields, { a: 5 });
  sub.receive([event("7-0", 6, [{ fieldId: "a", newValue: null }]), event("8-0", 7, [], "delete")]);
  assert.deepEqual(table.get("r1"), { recordId: "r1", version: 7, deleted: true, fields: {}, pending: 0 });
  assert.deepEqual(table.records(), [], "deleted records are not listed");
});

test("a refused edit rolls the record back to the server's current state", async () => {
  const { link, table } = await setup([{ recordId: "r1", version: 1, deleted: false, fields: { a: 1 } }]);
  const rollbacks = [];
  const conflicts = [];
  table.on("rollback", (s) => rollbacks.push(s.result.reason));
  table.on("conflict", (c) => conflicts.push([c.winner, c.theirs]));
  const done = table.set("r1", { a: "mine" });
  assert.equal(table.get("r1").fields.a, "mine");
  const req = await link.next();
  req.resolve({ status: "rejected", reason: "conflict", version: 2, current: { version: 2, fields: { a: "theirs" }, deleted: false } });
  assert.equal((await done).status, "rejected");
  assert.deepEqual(table.get("r1"), { recordId: "r1", version: 2, deleted: false, fields: { a: "theirs" }, pending: 0 });
  assert.deepEqual(rollbacks, ["conflict"]);
  assert.deepEqual(conflicts, [["theirs", [{ fieldId: "a", value: "theirs" }]]]);
});

test("an event for a record whose page has not come yet waits for the page", async () => {
  const link = new FakeLink();
  const outbox = new Outbox(link, new MemoryStorage(), { maxBatch: 100, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 });
  await outbox.start();
  const sub = new Subscription("t", undefined, { isPending: () => false });
  const table = new LiveTable("t", { outbox, request: (e, d) => link.request(e, d), whenOnline: async () => undefined }, sub);
  sub.joined({ tableId: "t", lastEventId: "1-0", color: "#000" });
  const load = await link.next();
  sub.receive([event("2-0", 8, [{ fieldId: "b", newValue: 2 }])]); // version 8 of a record not loaded
  load.resolve({ records: [{ recordId: "r1", version: 7, deleted: false, fields: { a: 1 } }], asOf: "1-0" });
  await table.ready;
  assert.deepEqual(table.get("r1").fields, { a: 1, b: 2 });
  assert.equal(table.get("r1").version, 8);
});

const intern = { access: "rw", fields: { "*": "rw", salary: "none", status: "r" } };

test("a masked table reports what the user may read and write from the subscribe ack", async () => {
  const { table } = await setup([], intern);
  assert.equal(table.canRead("salary"), false);
  assert.equal(table.canRead("status"), true);
  assert.equal(table.canWrite("status"), false);
  assert.equal(table.canWrite("name"), true);
  const reader = await setup([], { access: "r", fields: { "*": "r", notes: "rw" } });
  assert.equal(reader.table.canWrite("notes"), false, "never more than the table's access");
  const v1 = await setup([], { access: "rw" });
  assert.equal(v1.table.canWrite("anything"), true);
});

test("an edit of a read-only field settles rejected with forbidden without a round trip", async () => {
  const { link, table } = await setup([{ recordId: "r1", version: 1, deleted: false, fields: { status: "new" } }], intern);
  const result = await table.set("r1", { name: "x", status: "done" });
  assert.equal(result.status, "rejected");
  assert.equal(result.error.code, "forbidden");
  assert.match(result.error.message, /status/);
  assert.equal(await link.idle(), true, "nothing was sent");
  assert.deepEqual(table.get("r1").fields, { status: "new" }, "nothing shown");
  const reader = await setup([{ recordId: "r1", version: 1, deleted: false, fields: {} }], { access: "r" });
  assert.equal((await reader.table.delete("r1")).error.code, "forbidden");
});

test("an event whose changes were all hidden moves the record's version and nothing else", async () => {
  const { table, sub } = await setup([{ recordId: "r1", version: 1, deleted: false, fields: { name: "a" } }], intern);
  sub.receive([event("2-0", 2, []), event("3-0", 3, [{ fieldId: "name", newValue: "b" }])]);
  assert.deepEqual(table.get("r1"), { recordId: "r1", version: 3, deleted: false, fields: { name: "b" }, pending: 0 });
  assert.equal(table.isSettled(), true, "no event waits for a base");
});

test("history asks the server for a page of the record's changes, newest first", async () => {
  const { link, table } = await setup([{ recordId: "r1", version: 3, deleted: false, fields: { a: 3 } }]);
  const first = table.history("r1", { limit: 2 });
  const req = await link.next();
  assert.equal(req.event, "record_history");
  assert.deepEqual(req.data, { tableId: "t", recordId: "r1", limit: 2 });
  const newest = [
    event("3-0", 3, [{ fieldId: "a", oldValue: 2, oldVersion: 2, newValue: 3 }]),
    event("2-0", 2, [{ fieldId: "a", oldValue: 1, oldVersion: 1, newValue: 2 }]),
  ];
  req.resolve({ events: newest, next: "2-0" });
  const page = await first;
  assert.deepEqual(page.events.map((e) => e.changes[0].oldValue), [2, 1]);
  assert.equal(page.next, "2-0");

  const older = table.history("r1", { before: page.next });
  const req2 = await link.next();
  assert.deepEqual(req2.data, { tableId: "t", recordId: "r1", before: "2-0" }, "no limit: the server's default");
  req2.resolve({ events: [event("1-0", 1, [{ fieldId: "a", oldVersion: 0, newValue: 1 }], "create")] });
  const last = await older;
  assert.equal(last.events.length, 1);
  assert.equal(last.next, undefined, "the oldest page has no next");
  assert.deepEqual(table.get("r1").fields, { a: 3 }, "reading history changes nothing");
});
