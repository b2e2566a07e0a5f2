// End-to-end convergence with the real SDK (run by tests/sdk.rs, which owns
// the servers). Six clients on the sidecars make seeded random edits to one
// table: through LiveTable (versioned), blind, creates and deletes, edits to
// a table they may only read, going offline and back, dropped sockets.
// Meanwhile the harness injects faults on request: this script prints
// `FAULT <kind>` on stdout and waits for a line back on stdin.
//
// At the end: every edit settled (none lost), every LiveTable equals what
// load_records returns, and no unhandled rejection. The summary (every
// edit's answer) goes to RTSYNC_SUMMARY, for the harness to check each
// committed edit is in the stream exactly once and each rejected one not.
import { writeFileSync } from "node:fs";
import readline from "node:readline";
import { client, until, loadAll, plain } from "./harness.mjs";

const SEED = Number(process.env.RTSYNC_SEED ?? 1);
const DURATION = Number(process.env.RTSYNC_DURATION_MS ?? 30_000);
const FAULTS = (process.env.RTSYNC_FAULTS ?? "").split(",").filter(Boolean);
const SUMMARY = process.env.RTSYNC_SUMMARY;
const TABLE = "conv";
const READONLY = "conv-ro";
const USERS = ["alice", "bob", "carol", "dave", "erin", "frank"];
const RECORDS = Array.from({ length: 20 }, (_, i) => `r${String(i).padStart(2, "0")}`);
const FIELDS = ["name", "status", "n", "tags"];

const unhandled = [];
process.on("unhandledRejection", (e) => unhandled.push(String(e?.stack ?? e)));
const log = (...a) => console.error("[convergence]", ...a);

// A small seeded generator (mulberry32), so a run can be repeated.
let s = SEED >>> 0;
function rand() {
  s = (s + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const value = () => pick([() => `v${Math.floor(rand() * 1000)}`, () => Math.floor(rand() * 1e6) / 100, () => rand() < 0.5,
  () => null, () => [pick(["a", "b", "c"]), Math.floor(rand() * 9)], () => ({ k: `x${Math.floor(rand() * 9)}` })])();

// Faults are asked of the harness one at a time.
const rl = readline.createInterface({ input: process.stdin });
const answers = [];
rl.on("line", (line) => answers.shift()?.(line));
function fault(kind) {
  return new Promise((resolve) => {
    answers.push(resolve);
    process.stdout.write(`FAULT ${kind}\n`);
  });
}

const clients = USERS.map((u, i) => client(u, i, { requestTimeoutMs: 3_000 }));
const tables = clients.map((c, i) => c.table(TABLE, { onConflict: i % 2 ? "reject" : "overwrite" }));
const settled = [];
const stats = { made: 0, offline: 0, drops: 0, faults: [] };
for (const c of clients) {
  c.outbox.on("settled", ({ edit, result }) => settled.push({
    clientChangeId: edit.clientChangeId, tableId: edit.tableId, status: result.status,
    originalStatus: result.originalStatus, eventId: result.eventId, error: result.error?.code, reason: result.reason,
  }));
}
const promises = [];

await Promise.all(clients.map((c) => c.connect()));
await Promise.all(tables.map((t) => t.ready));
log(`seed ${SEED}, ${DURATION} ms, faults: ${FAULTS.join(" ") || "none"}`);

let faultChain = Promise.resolve();
const began = Date.now();
FAULTS.forEach((kind, k) => {
  const at = ((k + 1) / (FAULTS.length + 1)) * DURATION;
  setTimeout(() => {
    faultChain = faultChain.then(async () => {
      const t0 = Date.now();
      await fault(kind);
      stats.faults.push(`${kind} at ${t0 - began} ms (${Date.now() - t0} ms)`);
    });
  }, at);
});

while (Date.now() - began < DURATION) {
  const i = Math.floor(rand() * clients.length);
  const c = clients[i];
  const t = tables[i];
  const rec = pick(RECORDS);
  const roll = rand();
  if (roll < 0.55) {
    stats.made++;
    promises.push(t.set(rec, { [pick(FIELDS)]: value() }));
  } else if (roll < 0.70) {
    stats.made++;
    promises.push(c.change(TABLE, rec, [{ fieldId: pick(FIELDS), newValue: value() }]));
  } else if (roll < 0.73) {
    stats.made++;
    promises.push(t.delete(rec));
  } else if (roll < 0.77) {
    stats.made++;
    promises.push(t.create(rec, { name: value(), status: "new" }));
  } else if (roll < 0.80) {
    stats.made++;
    promises.push(c.change(READONLY, rec, [{ fieldId: "name", newValue: value() }]));
  } else if (roll < 0.86) {
    if (c.status === "online") {
      stats.offline++;
      c.setOffline(true);
      setTimeout(() => c.setOffline(false), 200 + rand() * 1_300);
    }
  } else if (roll < 0.89) {
    stats.drops++;
    c.dropConnection();
  }
  await new Promise((r) => setTimeout(r, 5 + rand() * 20));
}

await faultChain;
for (const c of clients) c.setOffline(false);
await until("every outbox empty", () => clients.every((c) => c.outbox.pending().length === 0), 120_000);
const results = await Promise.all(promises);
await until("every edit settled", () => settled.length === stats.made, 10_000);
await until("every table settled", () => tables.every((t) => t.isSettled()), 60_000);

const expected = JSON.stringify((await loadAll(clients[0], TABLE)).map(plain));
const mismatched = [];
await until("every LiveTable equal to load_records", () => {
  mismatched.length = 0;
  tables.forEach((t, i) => {
    if (JSON.stringify(t.snapshot().map(plain)) !== expected) mismatched.push(USERS[i]);
  });
  return mismatched.length === 0;
}, 30_000).catch((e) => {
  for (const u of mismatched) {
    const t = tables[USERS.indexOf(u)];
    const mine = t.snapshot().map(plain);
    const theirs = JSON.parse(expected);
    for (const r of theirs) {
      const m = mine.find((x) => x.recordId === r.recordId);
      if (JSON.stringify(m) !== JSON.stringify(r)) log(`${u} ${r.recordId}: has ${JSON.stringify(m)} want ${JSON.stringify(r)}`);
    }
  }
  throw e;
});

const count = (f) => results.filter(f).length;
const summary = {
  seed: SEED, durationMs: DURATION, ...stats, records: JSON.parse(expected).length,
  applied: count((r) => r.status === "applied"), merged: count((r) => r.status === "merged"),
  overwritten: count((r) => r.status === "overwritten"), rejected: count((r) => r.status === "rejected"),
  forbidden: count((r) => r.error?.code === "forbidden"), duplicate: count((r) => r.status === "duplicate"),
  unhandled, settled,
};
if (SUMMARY) writeFileSync(SUMMARY, JSON.stringify(summary));
const { settled: _, ...brief } = summary;
log(JSON.stringify(brief));
for (const c of clients) c.disconnect();
rl.close();
if (unhandled.length) {
  log("unhandled rejections:", unhandled);
  process.exit(1);
}
process.exit(0);
