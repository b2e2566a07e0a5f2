// LiveTable's undo and redo (protocol 3.3), with a fake connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LiveTable, MemoryStorage, Outbox, Subscription } from "../dist/index.js";
import { FakeLink, applied } from "./fake.mjs";

async function setup(records) {
  const link = new FakeLink();
  const outbox = new Outbox(link, new MemoryStorage(), { maxBatch: 100, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 });
  await outbox.start();
  const sub = new Subscription("t", undefined, { isPending: (id) => outbox.has(id) });
  const host = { outbox, request: (e, d) => link.request(e, d), whenOnline: async () => undefined };
  const table = new LiveTable("t", host, sub, { gapWaitMs: 10_000 });
  sub.joined({ tableId: "t", lastEventId: "1-0", color: "#000" });
  const load = await link.next();
  load.resolve({ records, asOf: "1-0" });
  await table.ready;
  return { link, table };
}

const r1 = (version, fields) => ({ recordId: "r1", version, deleted: false, fields });

/** Sets r1.a to `value` and answers it applied at `version`. */
async function edit(link, table, value, version) {
  const done = table.set("r1", { a: value });
  const req = await link.next();
  const change = Array.isArray(req.data) ? req.data[0] : req.data;
  req.resolve(Array.isArray(req.data) ? [applied(change, version)] : applied(change, version));
  await done;
}

test("nothing to undo before the user's first edit, something after it", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  assert.equal(table.canUndo, false);
  await edit(link, table, 2, 2);
  assert.equal(table.canUndo, true);
  assert.equal(table.canRedo, false);
});

test("an undo asks the server, then reads back the records it wrote", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  await edit(link, table, 2, 2);
  const done = table.undo();
  const req = await link.next();
  assert.deepEqual([req.event, req.data], ["undo", { tableId: "t" }]);
  req.resolve({ status: "applied", undone: "1002-0", eventId: "1003-0", version: 3,
    events: [{ recordId: "r1", eventId: "1003-0", version: 3 }], skipped: [] });
  const load = await link.next();
  assert.deepEqual([load.event, load.data], ["load_records", { tableId: "t", recordIds: ["r1"] }]);
  load.resolve({ records: [r1(3, { a: 1 })], asOf: "1003-0" });
  const result = await done;
  assert.equal(result.status, "applied");
  assert.deepEqual(table.get("r1").fields, { a: 1 });
  assert.equal(table.canUndo, false);
  assert.equal(table.canRedo, true);
});

test("a skipped field is reported with the undo event", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  await edit(link, table, 2, 2);
  const seen = [];
  table.on("undo", ({ way, result }) => seen.push([way, result.skipped]));
  const done = table.undo();
  const skipped = [{ recordId: "r1", fieldId: "a", reason: "changed", theirValue: 9, by: "bob" }];
  (await link.next()).resolve({ status: "conflict", undone: "1002-0", version: 3, events: [], skipped });
  await done;
  assert.deepEqual(seen, [["undo", skipped]]);
  assert.equal(table.canRedo, false, "nothing was written, so nothing to redo");
});

test("an empty stack on the server turns canUndo off", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  await edit(link, table, 2, 2);
  const done = table.undo();
  (await link.next()).resolve({ status: "nothing" });
  await done;
  assert.equal(table.canUndo, false);
});

test("a new edit after an undo turns canRedo off", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  await edit(link, table, 2, 2);
  const done = table.undo();
  (await link.next()).resolve({ status: "applied", events: [{ recordId: "r1", eventId: "1003-0", version: 3 }], skipped: [] });
  (await link.next()).resolve({ records: [r1(3, { a: 1 })], asOf: "1003-0" });
  await done;
  assert.equal(table.canRedo, true);
  await edit(link, table, 5, 4);
  assert.equal(table.canRedo, false);
});

test("an undo waits until the user's pending edits of the table are answered", async () => {
  const { link, table } = await setup([r1(1, { a: 1 })]);
  const pendingEdit = table.set("r1", { a: 2 });
  const undone = table.undo();
  const first = await link.next();
  assert.notEqual(first.event, "undo", "the edit goes first");
  const change = Array.isArray(first.data) ? first.data[0] : first.data;
  first.resolve(Array.isArray(first.data) ? [applied(change, 2)] : applied(change, 2));
  await pendingEdit;
  const req = await link.next();
  assert.equal(req.event, "undo");
  req.resolve({ status: "nothing" });
  await undone;
});
