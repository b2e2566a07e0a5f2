// The outbox's state machine against a fake connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryStorage, Outbox } from "../dist/index.js";
import { FakeLink, applied } from "./fake.mjs";

const OPTS = { maxBatch: 3, maxChunkBytes: 1 << 20, retryBaseMs: 5, retryMaxMs: 20 };
const edit = (recordId, value, extra = {}) => ({
  tableId: "t", recordId, type: "update", changes: [{ fieldId: "f", newValue: value }], ...extra,
});

async function started(link = new FakeLink(), storage = new MemoryStorage(), opts = OPTS) {
  const outbox = new Outbox(link, storage, opts);
  await outbox.start();
  return { outbox, link, storage };
}

test("an edit gets its clientChangeId when made and is stored before it is answered", async () => {
  const { outbox, link, storage } = await started();
  const { edit: e } = outbox.add(edit("r1", 1));
  assert.ok(e.clientChangeId.length > 0);
  await outbox.flushed();
  assert.deepEqual((await storage.load()).map((x) => x.clientChangeId), [e.clientChangeId]);
  const req = await link.next();
  assert.equal(req.event, "record_change");
  assert.equal(req.data.clientChangeId, e.clientChangeId);
  req.resolve(applied(e, 1));
  await outbox.flushed();
  await link.idle();
  assert.deepEqual(await storage.load(), [], "removed once answered");
});

test("queued edits are sent in order, one request at a time, in chunks of at most maxBatch", async () => {
  const link = new FakeLink();
  link.online = false;
  const { outbox } = await started(link);
  const edits = [1, 2, 3, 4, 5].map((i) => outbox.add(edit(`r${i}`, i)).edit);
  link.online = true;
  outbox.kick();
  const first = await link.next();
  assert.equal(first.event, "sync_offline_changes");
  assert.deepEqual(first.data.map((c) => c.entityId), ["r1", "r2", "r3"]);
  assert.ok(await link.idle(), "nothing else in flight");
  first.resolve({ applied: 3, results: edits.slice(0, 3).map((e, i) => applied(e, i + 1)) });
  const second = await link.next();
  assert.deepEqual(second.data.map((c) => c.entityId), ["r4", "r5"]);
  second.resolve({ applied: 2, results: edits.slice(3).map((e, i) => applied(e, i + 4)) });
  await link.idle();
  assert.equal(outbox.pending().length, 0);
});

test("a transport failure keeps the edit and resends it with the same id on the next connection", async () => {
  const { outbox, link } = await started();
  const { edit: e, result } = outbox.add(edit("r1", 1));
  const first = await link.next();
  link.online = false;
  first.reject(FakeLink.error("disconnected"));
  assert.ok(await link.idle(), "not resent while offline");
  link.online = true;
  outbox.kick();
  const again = await link.next();
  assert.equal(again.data.clientChangeId, e.clientChangeId);
  again.resolve({ ...applied(e, 1, "duplicate"), originalStatus: "applied" });
  const r = await result;
  assert.equal(r.status, "duplicate");
  assert.equal(r.originalStatus, "applied");
});

for (const code of ["unavailable", "timeout", "rate_limited"]) {
  test(`${code} is retried after a backoff with the same id`, async () => {
    const { outbox, link } = await started();
    const { edit: e, result } = outbox.add(edit("r1", 1));
    (await link.next()).reject(FakeLink.error(code));
    await new Promise((r) => setImmediate(r));
    assert.equal(outbox.state, "waiting");
    const again = await link.next();
    assert.equal(again.data.clientChangeId, e.clientChangeId);
    again.resolve(applied(e, 1));
    assert.equal((await result).status, "applied");
  });
}

test("a permanent refusal settles only the refused edit as rejected and never blocks the ones after it", async () => {
  const link = new FakeLink();
  link.online = false;
  const { outbox } = await started(link);
  const good1 = outbox.add(edit("r1", 1));
  const bad = outbox.add({ ...edit("r2", 2), tableId: "readonly" });
  const good2 = outbox.add(edit("r3", 3));
  const rollbacks = [];
  outbox.on("rollback", (s) => rollbacks.push(s.edit.clientChangeId));
  link.online = true;
  outbox.kick();
  (await link.next()).reject(FakeLink.error("forbidden")); // the whole chunk
  const one = await link.next();
  assert.equal(one.event, "record_change");
  assert.equal(one.data.clientChangeId, good1.edit.clientChangeId);
  one.resolve(applied(good1.edit, 1));
  const two = await link.next();
  assert.equal(two.data.clientChangeId, bad.edit.clientChangeId);
  two.reject(FakeLink.error("forbidden"));
  const three = await link.next();
  assert.equal(three.data.clientChangeId, good2.edit.clientChangeId);
  three.resolve(applied(good2.edit, 1));
  const refused = await bad.result;
  assert.equal(refused.status, "rejected");
  assert.equal(refused.error.code, "forbidden");
  assert.equal((await good2.result).status, "applied");
  assert.deepEqual(rollbacks, [bad.edit.clientChangeId]);
  assert.equal(outbox.pending().length, 0);
});

test("an edit settles with the server's real answer: overwritten stays overwritten", async () => {
  const link = new FakeLink();
  link.online = false;
  const { outbox } = await started(link);
  const a = outbox.add(edit("r1", 1, { version: 3 }));
  const b = outbox.add(edit("r2", 2));
  link.online = true;
  outbox.kick();
  const req = await link.next();
  const conflicts = [{ fieldId: "f", theirValue: "theirs" }];
  req.resolve({ results: [{ ...applied(a.edit, 5, "overwritten"), conflicts }, applied(b.edit, 1)] });
  const r = await a.result;
  assert.equal(r.status, "overwritten");
  assert.deepEqual(r.conflicts, conflicts);
});

test("two versioned edits of one record go in separate requests, the later one rebased on the first", async () => {
  const link = new FakeLink();
  link.online = false;
  const { outbox } = await started(link);
  const a = outbox.add(edit("r1", 1, { version: 4, rebase: true }));
  const b = outbox.add(edit("r1", 2, { version: 4, rebase: true }));
  link.online = true;
  outbox.kick();
  const first = await link.next();
  assert.equal(first.event, "record_change");
  first.resolve(applied(a.edit, 5));
  const second = await link.next();
  assert.equal(second.data.clientChangeId, b.edit.clientChangeId);
  assert.equal(second.data.version, 5, "based on the first edit's version");
  second.resolve(applied(b.edit, 6));
  await b.result;
});

test("edits a previous session left in storage are sent after start", async () => {
  const storage = new MemoryStorage();
  await storage.put({ clientChangeId: "old-2", tableId: "t", recordId: "r", type: "update", changes: [], createdAt: 2, seq: 0 });
  await storage.put({ clientChangeId: "old-1", tableId: "t", recordId: "q", type: "update", changes: [], createdAt: 1, seq: 0 });
  const settled = [];
  const link = new FakeLink();
  const outbox = new Outbox(link, storage, OPTS);
  outbox.on("settled", (s) => settled.push(s.edit.clientChangeId));
  await outbox.start();
  const req = await link.next();
  assert.deepEqual(req.data.map((c) => c.clientChangeId), ["old-1", "old-2"]);
  req.resolve({ results: req.data.map((c, i) => ({ status: "applied", eventId: `${i + 1}-0`, version: 1, clientChangeId: c.clientChangeId })) });
  await link.idle();
  assert.deepEqual(settled, ["old-1", "old-2"]);
});

test("against a server without per-change results, the chunk is asked again one edit at a time", async () => {
  const link = new FakeLink();
  link.online = false;
  const { outbox } = await started(link);
  const a = outbox.add(edit("r1", 1));
  const b = outbox.add(edit("r2", 2));
  link.online = true;
  outbox.kick();
  (await link.next()).resolve({ applied: 2, merged: 0, rejected: 0, duplicates: 0 });
  const one = await link.next();
  assert.equal(one.event, "record_change");
  one.resolve({ ...applied(a.edit, 1, "duplicate"), originalStatus: "applied" });
  (await link.next()).resolve({ ...applied(b.edit, 1, "duplicate"), originalStatus: "merged" });
  assert.equal((await b.result).originalStatus, "merged");
});
