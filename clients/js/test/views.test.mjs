// Views and row grants (PROTOCOL.md 2.2 and 3.5) in the SDK: records
// entering and leaving a LiveTable, loads naming the view, a view's filter
// changing, and switching views, with a fake connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LiveTable, MemoryStorage, Outbox, routeFrame, Subscription } from "../dist/index.js";
import { FakeLink } from "./fake.mjs";

const rec = (recordId, version, fields) => ({ recordId, version, deleted: false, fields });
const event = (id, recordId, version, changes, extra = {}) => ({
  id, type: "update", entityType: "record", entityId: recordId, tableId: "t", userId: "other", timestamp: 0, version,
  changes, ...extra,
});

async function setup(records, opts = {}) {
  const viewId = "viewId" in opts ? opts.viewId : "mine";
  const ack = opts.ack ?? {};
  const link = new FakeLink();
  const outbox = new Outbox(link, new MemoryStorage(), { maxBatch: 100, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 });
  await outbox.start();
  const sub = new Subscription("t", viewId, { isPending: (id) => outbox.has(id) });
  outbox.on("settled", ({ result }) => result.eventId && sub.acked(result.eventId));
  const host = { outbox, request: (e, d) => link.request(e, d), whenOnline: async () => undefined };
  const table = new LiveTable("t", host, sub, { gapWaitMs: 5 });
  sub.joined({ tableId: "t", lastEventId: "1-0", color: "#000", ...ack });
  const load = await link.next();
  load.resolve({ records, asOf: "1-0" });
  await table.ready;
  return { link, table, sub, outbox, load };
}

const ids = (table) => table.records().map((r) => r.recordId);

test("record_entered_view and record_left_view are routed to their table", () => {
  const record = rec("r1", 3, { owner: "ann" });
  assert.deepEqual(routeFrame("record_entered_view", { tableId: "t", viewId: "mine", record, eventId: "5-0" }),
    { kind: "enter", tableId: "t", viewId: "mine", record, eventId: "5-0" });
  assert.deepEqual(routeFrame("record_left_view", { tableId: "t", viewId: null, recordId: "r1", eventId: "6-0" }),
    { kind: "leave", tableId: "t", viewId: null, recordId: "r1", eventId: "6-0" });
  assert.equal(routeFrame("record_left_view", { viewId: "mine", recordId: "r1" }).kind, "unroutable");
  assert.equal(routeFrame("record_entered_view", { tableId: "t", record: { recordId: "r1" } }).kind, "ignored",
    "a state without a version is never applied");
});

test("a table with a view names it in every load_records", async () => {
  const { load } = await setup([]);
  assert.deepEqual(load.data, { tableId: "t", viewId: "mine", limit: 500 });
});

test("a record entering the view is added with its state, and one leaving it is removed", async () => {
  const { table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  const seen = [];
  table.on("entered", ({ recordId }) => seen.push(`+${recordId}`));
  table.on("left", ({ recordId }) => seen.push(`-${recordId}`));
  sub.move({ kind: "enter", viewId: "mine", record: rec("r2", 7, { owner: "ann", task: "x" }), eventId: "5-0" });
  assert.deepEqual(table.get("r2"), { ...rec("r2", 7, { owner: "ann", task: "x" }), pending: 0 });
  assert.equal(sub.position, "5-0", "the move's event id is the position");
  sub.move({ kind: "leave", viewId: "mine", recordId: "r1", eventId: "6-0" });
  assert.equal(table.get("r1"), undefined);
  assert.deepEqual(ids(table), ["r2"]);
  assert.deepEqual(seen, ["+r2", "-r1"]);
});

test("a record leaving the user's rows (viewId null) is removed as from a view", async () => {
  const { table, sub } = await setup([rec("r1", 2, { owner: "ann" })], { viewId: undefined });
  sub.move({ kind: "leave", viewId: null, recordId: "r1", eventId: "6-0" });
  assert.deepEqual(ids(table), []);
});

test("a move repeated at or before the position, or naming another view, is dropped", async () => {
  const { table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  sub.receive([event("8-0", "r1", 3, [{ fieldId: "task", newValue: "y" }])]);
  sub.move({ kind: "leave", viewId: "mine", recordId: "r1", eventId: "7-0" });
  sub.move({ kind: "leave", viewId: "all", recordId: "r1", eventId: "9-0" });
  assert.deepEqual(ids(table), ["r1"]);
  assert.equal(sub.position, "8-0");
});

test("events and own answers of a record that left are ignored until it enters again", async () => {
  const { link, table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  const done = table.set("r1", { owner: "bob" });
  const req = await link.next();
  sub.move({ kind: "leave", viewId: "mine", recordId: "r1", eventId: "5-0" });
  req.resolve({ status: "applied", eventId: "5-0", version: 3, clientChangeId: req.data.clientChangeId });
  await done;
  sub.receive([event("6-0", "r1", 4, [{ fieldId: "task", newValue: "late" }])]);
  assert.equal(table.get("r1"), undefined);
  sub.move({ kind: "enter", viewId: "mine", record: rec("r1", 5, { owner: "ann", task: "back" }), eventId: "7-0" });
  assert.deepEqual(table.get("r1").fields, { owner: "ann", task: "back" });
});

test("an entering state never replaces a newer one held", async () => {
  const { table, sub } = await setup([rec("r1", 4, { owner: "ann", task: "new" })]);
  sub.move({ kind: "enter", viewId: "mine", record: rec("r1", 3, { owner: "ann", task: "old" }) });
  assert.deepEqual(table.get("r1").fields, { owner: "ann", task: "new" });
});

test("a change of the followed view's filter reads the view again and drops what it no longer holds", async () => {
  const { link, table, sub } = await setup([rec("r1", 2, { owner: "ann" }), rec("r2", 1, { owner: "ann" })]);
  const causes = [];
  table.on("record", ({ recordId, cause }) => causes.push(`${recordId}:${cause}`));
  sub.receive([{ ...event("9-0", "mine", 0, []), entityType: "view" }]);
  assert.deepEqual(ids(table), ["r1", "r2"], "shown while the view is read");
  const page = await link.next();
  assert.deepEqual(page.data, { tableId: "t", viewId: "mine", limit: 500 });
  page.resolve({ records: [rec("r2", 1, { owner: "ann" }), rec("r3", 4, { owner: "ann" })], asOf: "9-0" });
  await new Promise((r) => table.once("ready", r));
  assert.deepEqual(ids(table), ["r2", "r3"]);
  assert.ok(causes.includes("r1:left"));
});

test("another view's event does not reload the table", async () => {
  const { link, table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  sub.receive([{ ...event("9-0", "other-view", 0, []), entityType: "view" }]);
  assert.equal(await link.idle(), true);
  assert.deepEqual(ids(table), ["r1"]);
});

test("switching views joins afresh and reads the new view's records", async () => {
  const { link, table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  sub.setView("blocked");
  assert.deepEqual(sub.joinRequest(), { tableId: "t", viewId: "blocked" }, "a fresh subscribe");
  assert.equal(await link.idle(), true, "nothing is read before the new view is joined");
  sub.joined({ tableId: "t", lastEventId: "20-0", color: "#000" });
  const page = await link.next();
  assert.deepEqual(page.data, { tableId: "t", viewId: "blocked", limit: 500 });
  page.resolve({ records: [rec("r7", 3, { status: "Blocked" })], asOf: "20-0" });
  await new Promise((r) => table.once("ready", r));
  assert.deepEqual(ids(table), ["r7"]);
  assert.equal(table.viewId, "blocked");
});

test("a user's own edit that takes a record out of the view removes it after one read", async () => {
  const { link, table } = await setup([rec("r1", 2, { owner: "ann" }), rec("r2", 2, { owner: "ann" })]);
  const done = table.set("r1", { owner: "bob" });
  const req = await link.next();
  req.resolve({ status: "applied", eventId: "5-0", version: 3, clientChangeId: req.data.clientChangeId });
  await done;
  const check = await link.next();
  assert.deepEqual(check.data, { tableId: "t", viewId: "mine", recordIds: ["r1"] });
  check.resolve({ records: [], asOf: "5-0" });
  await new Promise((r) => table.once("left", r));
  assert.deepEqual(ids(table), ["r2"]);
});

test("a table without a view or row grant reads nothing again after an own edit", async () => {
  const { link, table } = await setup([rec("r1", 2, { owner: "ann" })], { viewId: undefined });
  const done = table.set("r1", { owner: "bob" });
  const req = await link.next();
  req.resolve({ status: "applied", eventId: "5-0", version: 3, clientChangeId: req.data.clientChangeId });
  await done;
  assert.equal(await link.idle(50), true);
});

test("a row grant in the subscribe ack is kept with the grant", async () => {
  const rows = { field: "owner", op: "eq", value: "$user" };
  const { sub } = await setup([], { viewId: undefined, ack: { access: "rw", rows } });
  assert.deepEqual(sub.grant, { access: "rw", fields: undefined, rows });
});

test("a record the user commits while the view is read again is kept until its recheck says otherwise", async () => {
  const { link, table, sub } = await setup([rec("r1", 2, { owner: "ann" })]);
  sub.receive([{ ...event("9-0", "mine", 0, []), entityType: "view" }]);
  const page = await link.next();
  const done = table.create("r5", { owner: "ann" });
  const req = await link.next();
  req.resolve({ status: "applied", eventId: "10-0", version: 1, clientChangeId: req.data.clientChangeId });
  await done;
  page.resolve({ records: [rec("r1", 2, { owner: "ann" })], asOf: "9-0" });
  await new Promise((r) => table.once("ready", r));
  assert.deepEqual(ids(table), ["r1", "r5"]);
  const check = await link.next();
  assert.deepEqual(check.data.recordIds, ["r5"]);
  check.resolve({ records: [rec("r5", 1, { owner: "ann" })], asOf: "10-0" });
  assert.equal(await link.idle(), true);
  assert.deepEqual(ids(table), ["r1", "r5"]);
});
