// A page using socket.io-client's browser bundle (the seed's frontend code)
// edits a table beside the demo grid (LiveTable on /ws) on the other
// sidecar: both end equal, with no page errors. The Socket.IO page is
// served from another origin (a small server of the test's own), so its
// long-polling goes through CORS as a real app's would.
// Run by tests/browser.rs (RTSYNC_DEMO_A / RTSYNC_DEMO_B).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const A = process.env.RTSYNC_DEMO_A;
const B = process.env.RTSYNC_DEMO_B;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT = 20_000;
const BUNDLE = readFileSync(
  fileURLToPath(new URL("../socketio/node_modules/socket.io-client/dist/socket.io.min.js", import.meta.url)),
  "utf8",
);

const PAGE = `<!doctype html><meta charset="utf-8"><title>seed</title>
<script src="/socket.io.min.js"></script>
<script>
const params = new URL(location.href).searchParams;
const TABLE = params.get("table");
window.state = {};
window.ready = false;
const socket = io(params.get("server"));
const apply = (events) => {
  for (const e of events) {
    if (e.tableId !== TABLE) continue;
    const rec = (window.state[e.entityId] ??= {});
    for (const c of e.changes ?? []) {
      if (c.newValue === undefined || c.newValue === null) delete rec[c.fieldId];
      else rec[c.fieldId] = c.newValue;
    }
  }
};
socket.on("record_change", (e) => apply([e]));
socket.on("batch_changes", apply);
socket.on("connect", () => socket.emit("authenticate", { userId: "seed-user", userName: "Seed" }));
socket.on("authenticated", async () => {
  await socket.emitWithAck("subscribe_to_table", { tableId: TABLE });
  let after;
  for (;;) {
    const page = await socket.emitWithAck("load_records", { tableId: TABLE, after, limit: 1000 });
    for (const r of page.records) window.state[r.recordId] = { ...r.fields };
    if (!page.next) break;
    after = page.next;
  }
  window.ready = true;
});
// The app's own edits: applied when acked (the server does not echo a
// change to the connection that made it).
window.edit = async (recordId, fieldId, value) => {
  const result = await socket.emitWithAck("record_change", { type: "update", recordId, tableId: TABLE, changes: [{ fieldId, newValue: value }] });
  if (result.status !== "rejected" && !result.error) (window.state[recordId] ??= {})[fieldId] = value;
  return result;
};
window.transport = () => socket.io.engine?.transport?.name;
</script>`;

let browser;
let site;
const errors = [];
before(async () => {
  // The page's own origin: another port, so its requests to the sidecar
  // are cross-origin (CORS), from the same (loopback) address space.
  site = createServer((req, res) => {
    const js = req.url.startsWith("/socket.io.min.js");
    res.writeHead(200, { "content-type": js ? "text/javascript" : "text/html" });
    res.end(js ? BUNDLE : PAGE);
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => {
  await browser?.close();
  site?.close();
});

function watch(page, who) {
  page.on("pageerror", (e) => errors.push(`[${who}] ${e.message}`));
  page.on("console", (m) => process.env.RTSYNC_DEBUG && console.error(`[${who}] ${m.type()}: ${m.text()}`));
  page.on("requestfailed", (r) => process.env.RTSYNC_DEBUG && console.error(`[${who}] failed: ${r.url()} ${r.failure()?.errorText}`));
}

test("a socket.io-client page and a LiveTable page on two sidecars end with the same table", async () => {
  const table = "t-socketio";
  // The grid first: it seeds the table's 30 rows.
  const grid = await (await browser.newContext()).newPage();
  watch(grid, "grid");
  await grid.goto(`${B}/demo/?user=grid&table=${table}`);
  await grid.waitForSelector("body[data-ready='1']", { timeout: WAIT });
  await grid.waitForFunction(() => document.querySelectorAll("tr[data-record]").length === 30, null, { timeout: WAIT });

  const seed = await (await browser.newContext()).newPage();
  watch(seed, "seed");
  const origin = `http://127.0.0.1:${site.address().port}`;
  await seed.goto(`${origin}/?server=${encodeURIComponent(A)}&table=${table}`);
  await seed.waitForFunction(() => window.ready, null, { timeout: WAIT });
  await seed.waitForFunction(() => window.transport() === "websocket", null, { timeout: WAIT });

  // Edits from both sides, interleaved.
  for (let i = 1; i <= 5; i++) {
    const r = await seed.evaluate(([rec, v]) => window.edit(rec, "task", v), [`r0${i}`, `from socket.io ${i}`]);
    assert.equal(r.status, "applied");
    const cell = grid.locator(`[data-cell="r1${i}|owner"]`);
    await cell.fill(`grid ${i}`);
    await cell.press("Tab");
  }
  for (let i = 1; i <= 5; i++) {
    await grid.waitForFunction(
      ([k, v]) => document.querySelector(`[data-cell="${k}"]`)?.value === v,
      [`r0${i}|task`, `from socket.io ${i}`], { timeout: WAIT },
    );
    await seed.waitForFunction(([rec, v]) => window.state[rec]?.owner === v, [`r1${i}`, `grid ${i}`], { timeout: WAIT });
  }
  await grid.waitForFunction(() => window.rtsync.table.isSettled(), null, { timeout: WAIT });
  const gridState = await grid.evaluate(() => Object.fromEntries(window.rtsync.table.records().map((r) => [r.recordId, r.fields])));
  const seedState = await seed.evaluate(() => window.state);
  assert.deepEqual(seedState, gridState);
  assert.deepEqual(errors, [], "no page errors");
});
