// The demo (v2, on the SDK's LiveTable) in a real browser: users on two
// sidecars. Run by tests/browser.rs, which starts Redis and two sidecars with
// --demo and passes their base URLs in RTSYNC_DEMO_A / RTSYNC_DEMO_B.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const A = process.env.RTSYNC_DEMO_A;
const B = process.env.RTSYNC_DEMO_B;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SCREENSHOT = process.env.RTSYNC_SCREENSHOT;
const WAIT = 20_000;

let browser;
let pageErrors = [];
before(async () => {
  assert.ok(A && B, "RTSYNC_DEMO_A and RTSYNC_DEMO_B must be set");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => browser?.close());
afterEach(() => {
  const errors = pageErrors;
  pageErrors = [];
  assert.deepEqual(errors, [], "no page errors");
});

function watch(page, who) {
  page.on("pageerror", (e) => pageErrors.push(`[${who}] ${e.message}`));
  page.on("console", (m) => m.type() === "error" && !/WebSocket|ERR_CONNECTION|Failed to load resource/.test(m.text()) && pageErrors.push(`[${who}] console: ${m.text()}`));
}

async function open(base, user, table, path = "", extra = "", rows = 30) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  watch(page, user);
  await page.goto(`${base}/demo/${path}?user=${user}&table=${table}${extra}`);
  await ready(page, user, rows);
  return page;
}

/** Online, loaded, present, and showing `rows` rows (30 once seeded, fewer in a view or under a row grant). */
async function ready(page, user, rows = 30) {
  await page.waitForSelector("#status.online", { timeout: WAIT });
  await page.waitForSelector("body[data-ready='1']", { timeout: WAIT });
  await page.waitForFunction((u) => [...document.querySelectorAll(".user")].some((e) => e.dataset.user === u), user, { timeout: WAIT });
  await page.waitForFunction((n) => document.querySelectorAll("tr[data-record]").length === n, rows, { timeout: WAIT });
}

// Seeded owners: OWNERS[i % 6] for row i + 1 (alice, bob, chen, dara, eli, farah).
const OWNED = {
  alice: ["r01", "r07", "r13", "r19", "r25"],
  eli: ["r05", "r11", "r17", "r23", "r29"],
};
const shown = (page) => page.evaluate(() => [...document.querySelectorAll("tr[data-record]")].map((tr) => tr.dataset.record));
async function expectRows(page, ids) {
  await page.waitForFunction((want) => JSON.stringify([...document.querySelectorAll("tr[data-record]")]
    .map((tr) => tr.dataset.record)) === want, JSON.stringify(ids), { timeout: WAIT })
    .catch(async (e) => assert.fail(`${e.message}: rows ${await shown(page)}, want ${ids}`));
}

const cell = (page, r, f) => page.locator(`[data-cell="${r}|${f}"]`);
async function edit(page, r, f, value) {
  await cell(page, r, f).fill(value);
  await cell(page, r, f).press("Tab");
}
async function expectValue(page, r, f, value) {
  await page.waitForFunction(
    ([k, v]) => document.querySelector(`[data-cell="${k}"]`)?.value === v,
    [`${r}|${f}`, value],
    { timeout: WAIT },
  );
}
const grid = (page) => page.evaluate(() => [...document.querySelectorAll("[data-cell]")]
  .map((i) => `${i.dataset.cell}=${i.type === "checkbox" ? i.checked : i.value}`));
const state = (page) => page.evaluate(() => window.rtsync.table.records().map((r) => [r.recordId, r.version, r.fields]));
async function settled(page) {
  await page.waitForFunction(() => window.rtsync.table.isSettled(), null, { timeout: WAIT });
}

test("a fresh table is seeded with 30 rows of 6 typed fields", async () => {
  const alice = await open(A, "alice", "t-seed");
  const bob = await open(B, "bob", "t-seed");
  const rec = await alice.evaluate(() => window.rtsync.table.get("r04"));
  assert.deepEqual(Object.keys(rec.fields).sort(), ["due", "estimate", "owner", "shipped", "status", "task"]);
  assert.equal(typeof rec.fields.estimate, "number");
  assert.equal(typeof rec.fields.shipped, "boolean");
  assert.equal(await cell(alice, "r04", "shipped").isChecked(), true);
  await settled(alice);
  await settled(bob);
  assert.deepEqual(await grid(alice), await grid(bob));
});

test("two users on two sidecars see each other's edits and who is editing which cell", async () => {
  const alice = await open(A, "alice", "t-live");
  const bob = await open(B, "bob", "t-live");
  await alice.waitForSelector('.user[data-user="bob"]', { timeout: WAIT });
  await edit(alice, "r01", "task", "hello from alice");
  await expectValue(bob, "r01", "task", "hello from alice");
  await cell(bob, "r02", "status").selectOption("Blocked");
  await expectValue(alice, "r02", "status", "Blocked");
  await cell(bob, "r03", "owner").focus();
  await alice.waitForSelector('td[data-cursor-of="bob"].remote [data-cell="r03|owner"]', { timeout: WAIT });
  assert.equal(await alice.locator('td[data-cursor-of="bob"]').count(), 1, "one cursor per user");
  assert.equal(await alice.locator('td[data-cursor-of="bob"] .tag').textContent(), "bob");
});

test("the activity feed lists other users' edits", async () => {
  const alice = await open(A, "alice", "t-feed");
  const bob = await open(B, "bob", "t-feed");
  await edit(bob, "r05", "owner", "Zoe");
  await alice.waitForFunction(() => document.querySelector("#activity li")?.textContent.includes('bob set r05.owner = "Zoe"'), null, { timeout: WAIT });
});

test("offline edits show a queued count, sync back, and both grids end the same", async () => {
  const alice = await open(A, "alice", "t-offline");
  const bob = await open(B, "bob", "t-offline");
  await bob.check("#offline");
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  await edit(bob, "r03", "owner", "bob-offline");
  await edit(bob, "r07", "task", "queued too");
  await bob.waitForSelector('#queued[data-count="2"]', { timeout: WAIT });
  await edit(alice, "r04", "due", "2027-01-15");
  await bob.uncheck("#offline");
  await bob.waitForSelector("#status.online", { timeout: WAIT });
  await bob.waitForSelector('#queued[data-count="0"]', { timeout: WAIT });
  await expectValue(alice, "r03", "owner", "bob-offline");
  await expectValue(alice, "r07", "task", "queued too");
  await expectValue(bob, "r04", "due", "2027-01-15");
  await settled(alice);
  await settled(bob);
  assert.deepEqual(await grid(alice), await grid(bob));
  assert.deepEqual(await state(alice), await state(bob));
});

test("an edit queued offline survives a page reload (IndexedDB) and is sent after it", async () => {
  const alice = await open(A, "alice", "t-durable");
  const bob = await open(B, "bob", "t-durable");
  await bob.check("#offline");
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  await edit(bob, "r08", "task", "kept across a reload");
  await bob.waitForSelector('#queued[data-count="1"]', { timeout: WAIT });
  await bob.waitForFunction(() => window.rtsync.client.outbox.flushed().then(() => true), null, { timeout: WAIT });
  await bob.reload();
  await ready(bob, "bob");
  await expectValue(alice, "r08", "task", "kept across a reload");
  await bob.waitForSelector('#queued[data-count="0"]', { timeout: WAIT });
  await expectValue(bob, "r08", "task", "kept across a reload");
});

test("a conflict flashes the cell, shows theirs versus yours, and keeps the winning value", async () => {
  const alice = await open(A, "alice", "t-conflict");
  const bob = await open(B, "bob", "t-conflict");
  await bob.check("#offline");
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  await edit(alice, "r05", "task", "alice wins");
  await edit(bob, "r05", "task", "bob loses");
  await bob.uncheck("#offline");
  await bob.waitForSelector('td.flash[data-conflict="theirs"] [data-cell="r05|task"]', { timeout: WAIT });
  const toast = await bob.locator(".toast").first().textContent();
  assert.match(toast, /r05\.task: theirs "alice wins" · yours "bob loses" → theirs kept/);
  await expectValue(bob, "r05", "task", "alice wins");
  await expectValue(alice, "r05", "task", "alice wins");
});

test("a late joiner after 100 edits sees the same grid as everyone else", async () => {
  const alice = await open(A, "alice", "t-late");
  const bob = await open(B, "bob", "t-late");
  // 100 edits from both sides, without waiting for each other.
  await Promise.all([
    alice.evaluate(() => Promise.all(Array.from({ length: 50 }, (_, i) =>
      window.rtsync.table.set(`r${String((i % 30) + 1).padStart(2, "0")}`, { estimate: i })))),
    bob.evaluate(() => Promise.all(Array.from({ length: 50 }, (_, i) =>
      window.rtsync.table.set(`r${String((i * 7 % 30) + 1).padStart(2, "0")}`, { owner: `bob-${i}` })))),
  ]);
  await settled(alice);
  await settled(bob);
  const carol = await open(B, "carol", "t-late");
  await settled(carol);
  await alice.waitForFunction(async (expected) => JSON.stringify(window.rtsync.table.records().map((r) => [r.recordId, r.version, r.fields])) === expected,
    JSON.stringify(await state(carol)), { timeout: WAIT });
  assert.deepEqual(await state(alice), await state(carol));
  assert.deepEqual(await state(bob), await state(carol));
  assert.deepEqual(await grid(alice), await grid(carol));
  if (SCREENSHOT) await carol.screenshot({ path: SCREENSHOT, fullPage: true });
});

test("the split view shows three users side by side in one page, editing together", async () => {
  const context = await browser.newContext({ viewport: { width: 1800, height: 1000 } });
  const page = await context.newPage();
  watch(page, "split");
  await page.goto(`${A}/demo/split.html?table=t-split&left=ann&right=ray`);
  const left = page.frameLocator("#left");
  const right = page.frameLocator("#right");
  await left.locator("#status.online").waitFor({ timeout: WAIT });
  await right.locator("#status.online").waitFor({ timeout: WAIT });
  await left.locator('.user[data-user="ray"]').waitFor({ timeout: WAIT });
  await left.locator('tr[data-record="r30"]').waitFor({ timeout: WAIT });
  await right.locator('tr[data-record="r30"]').waitFor({ timeout: WAIT });
  await left.locator('[data-cell="r11|task"]').fill("from the left");
  await left.locator('[data-cell="r11|task"]').press("Tab");
  await page.waitForFunction(() => document.querySelector("#right").contentDocument
    ?.querySelector('[data-cell="r11|task"]')?.value === "from the left", null, { timeout: WAIT });
  // The intern (eli by default) owns r11.
  const intern = page.frameLocator("#intern");
  await intern.locator('[data-cell="r11|task"]').waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelector("#intern").contentDocument
    ?.querySelector('[data-cell="r11|task"]')?.value === "from the left", null, { timeout: WAIT });
  assert.equal(await intern.locator("tr[data-record]").count(), 5, "only the intern's own tasks");
  assert.equal(await intern.locator('th[data-field="estimate"]').count(), 0);
  assert.equal(await intern.locator('th[data-field="status"][data-locked="1"]').count(), 1);
});

test("the intern's pane hides Days, locks Status, and still converges with the others", async () => {
  const alice = await open(A, "alice", "t-intern");
  const intern = await open(B, "eli", "t-intern", "", "&role=intern", 5);
  assert.equal(await intern.locator('th[data-field="estimate"]').count(), 0, "no Days column");
  assert.equal(await intern.locator('[data-cell="r05|estimate"]').count(), 0);
  assert.equal(await intern.locator('th[data-field="status"][data-locked="1"]').count(), 1, "a lock on Status");
  assert.equal(await cell(intern, "r05", "status").isDisabled(), true);
  assert.equal(await alice.locator('th[data-field="estimate"]').count(), 1, "alice sees Days");
  // Alice edits a hidden and a visible field; the intern gets the visible one.
  await edit(alice, "r05", "estimate", "42");
  await edit(alice, "r05", "task", "seen by the intern");
  await expectValue(intern, "r05", "task", "seen by the intern");
  // The intern edits what it may; a Status edit is refused without a round trip.
  await edit(intern, "r11", "task", "intern was here");
  await expectValue(alice, "r11", "task", "intern was here");
  const refused = await intern.evaluate(() => window.rtsync.table.set("r11", { status: "Done" }));
  assert.equal(refused.error.code, "forbidden");
  await settled(alice);
  await settled(intern);
  const full = await state(alice);
  const masked = await state(intern);
  assert.deepEqual(masked, full.filter(([, , f]) => f.owner === "eli").map(([id, v, fields]) => {
    const { estimate, ...rest } = fields;
    return [id, v, rest];
  }), "the intern's rows, versions included, without Days");
  assert.ok(masked.every(([, , f]) => !("estimate" in f)));
});

test("a user name is shown as text, never run as HTML", async () => {
  const alice = await open(A, "alice", "t-xss");
  const context = await browser.newContext();
  const mallory = await context.newPage();
  watch(mallory, "mallory");
  const name = encodeURIComponent('<img src=x onerror="window.__xss=1">');
  await mallory.goto(`${B}/demo/?user=mallory&table=t-xss&name=${name}`);
  await mallory.waitForSelector("#status.online", { timeout: WAIT });
  await alice.waitForSelector('.user[data-user="mallory"]', { timeout: WAIT });
  const shown = await alice.locator('.user[data-user="mallory"]').textContent();
  assert.equal(shown, '<img src=x onerror="window.__xss=1">');
  assert.equal(await alice.locator("#users img").count(), 0);
  assert.equal(await alice.evaluate(() => window.__xss), undefined);
});

// ---- v1.3: editing indicators, seeding once, the split view ----------------

test("another user's typing badge shows in the cell they edit within 300 ms, and goes on blur", async () => {
  const alice = await open(A, "alice", "t-typing");
  const bob = await open(B, "bob", "t-typing");
  await alice.waitForSelector('.user[data-user="bob"]', { timeout: WAIT });
  await bob.waitForSelector('.user[data-user="alice"]', { timeout: WAIT });
  const began = Date.now();
  await cell(bob, "r06", "task").focus();
  await alice.waitForSelector('td[data-editing-of="bob"] .typing', { state: "visible", timeout: 300 + (Date.now() - began) });
  const took = Date.now() - began;
  assert.ok(took <= 300, `badge after ${took} ms`);
  const badge = alice.locator('td[data-editing-of="bob"] .typing');
  assert.equal(await alice.locator('td[data-editing-of="bob"] [data-cell="r06|task"]').count(), 1, "in the edited cell");
  assert.equal(await badge.locator("i").count(), 3, "three dots");
  const bobColor = await alice.locator('.user[data-user="bob"]').evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.equal(await badge.evaluate((e) => getComputedStyle(e).backgroundColor), bobColor, "in bob's colour");
  const shot = await badge.screenshot();
  assert.ok(shot.length > 100, "the badge is painted");
  if (SCREENSHOT) await alice.screenshot({ path: SCREENSHOT.replace(/(\.png)?$/, "-typing.png") });
  await cell(bob, "r06", "task").blur();
  await alice.waitForSelector('td[data-editing-of="bob"]', { state: "detached", timeout: WAIT });
});

test("the split view at 1,500 px: one pane seeds a fresh table, no conflict toasts, no clipped columns", async () => {
  const context = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
  const page = await context.newPage();
  watch(page, "split-1500");
  await page.goto(`${A}/demo/split.html?table=t-fresh-split&left=ana&right=raj&intern=eli`);
  const frames = ["#left", "#right", "#intern"];
  for (const f of frames) {
    const frame = page.frameLocator(f);
    await frame.locator("#status.online").waitFor({ timeout: WAIT });
    // r29 is eli's: every pane shows it once seeded.
    await frame.locator('tr[data-record="r29"]').waitFor({ timeout: WAIT });
  }
  // Every pane has settled: all seeded rows at one version, nothing queued
  // (the intern holds only their 5).
  await page.waitForFunction((ids) => ids.every((f) => {
    const w = document.querySelector(f).contentWindow;
    return w.rtsync?.table.isSettled() && w.rtsync.client.outbox.pending().length === 0
      && w.rtsync.table.records().length === (f === "#intern" ? 5 : 30);
  }), frames, { timeout: WAIT });
  const versions = await page.evaluate(() => document.querySelector("#left").contentWindow.rtsync.table.records()
    .map((r) => r.version));
  assert.ok(versions.every((v) => v === 1), `seeded once: versions ${[...new Set(versions)]}`);
  for (const f of frames) {
    const frame = page.frameLocator(f);
    assert.equal(await frame.locator(".toast").count(), 0, `${f}: no toast`);
    const clipped = await page.evaluate((id) => {
      const doc = document.querySelector(id).contentDocument;
      const width = doc.documentElement.clientWidth;
      return [...doc.querySelectorAll("#grid tr#head th, #grid tr[data-record='r01'] td")]
        .filter((e) => e.getBoundingClientRect().right > width + 0.5 || e.getBoundingClientRect().width < 20)
        .map((e) => e.dataset.field ?? e.querySelector("[data-cell]")?.dataset.cell);
    }, f);
    assert.deepEqual(clipped, [], `${f}: every column fits`);
  }
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT.replace(/(\.png)?$/, "-split.png") });
});

test("the demo's glyphs need no emoji font", async () => {
  await open(A, "alice", "t-glyphs");
  const intern = await open(B, "eli", "t-glyphs", "", "&role=intern", 5);
  const text = await intern.evaluate(() => document.body.innerText + document.title);
  const emoji = [...text].filter((ch) => {
    const c = ch.codePointAt(0);
    return c >= 0x1f000 || (c >= 0x2600 && c <= 0x27bf) || (c >= 0xfe00 && c <= 0xfe0f);
  });
  assert.deepEqual(emoji, []);
  assert.equal(await intern.locator('th[data-field="status"] .lock').count(), 1, "the lock is drawn in CSS");
});

test("Ctrl+Z undoes the user's own edit; an undo that meets a colleague's later edit leaves it and says who", async () => {
  const alice = await open(A, "alice", "t-undo");
  const bob = await open(B, "bob", "t-undo");
  const before = await cell(alice, "r03", "owner").inputValue();
  await edit(alice, "r03", "owner", "alice was here");
  await settled(alice);
  await alice.keyboard.press("Control+z");
  await expectValue(alice, "r03", "owner", before);
  await expectValue(bob, "r03", "owner", before);
  await edit(alice, "r04", "task", "mine");
  await expectValue(bob, "r04", "task", "mine");
  await edit(bob, "r04", "task", "theirs");
  await expectValue(alice, "r04", "task", "theirs");
  await settled(alice);
  await alice.keyboard.press("Control+z");
  await alice.waitForFunction(() => [...document.querySelectorAll(".toast")]
    .some((t) => t.textContent.includes("r04.task was changed by bob since")), null, { timeout: WAIT });
  await expectValue(alice, "r04", "task", "theirs");
});

test("a record's history panel says who changed which field from what to what, and follows later changes", async () => {
  const alice = await open(A, "alice", "t-history");
  const bob = await open(B, "bob", "t-history");
  const before = await cell(alice, "r05", "status").inputValue();
  await cell(alice, "r05", "status").selectOption("Done");
  await expectValue(bob, "r05", "status", "Done");
  await bob.locator('tr[data-record="r05"] th.rowhead').click();
  const line = `alice changed Status: ${before} → Done`;
  await bob.waitForFunction((l) => document.querySelector("#history li")?.textContent.startsWith(l), line, { timeout: WAIT });
  assert.match(await bob.locator("#history li").first().textContent(), / s ago$/);
  // The open panel follows the record: bob's own edit comes first, newest first.
  await edit(bob, "r05", "task", "Zoe's now");
  await bob.waitForFunction(() => document.querySelector("#history li")?.textContent.startsWith("bob changed Task:")
    && document.querySelectorAll("#history li")[1]?.textContent.startsWith("alice changed Status:"), null, { timeout: WAIT });
  // The intern never sees a hidden field in history (Days is hidden from interns).
  await edit(alice, "r05", "estimate", "9");
  const intern = await open(B, "eli", "t-history", "", "&role=intern", 5);
  await intern.locator('tr[data-record="r05"] th.rowhead').click();
  await intern.waitForFunction(() => document.querySelectorAll("#history li").length >= 2, null, { timeout: WAIT });
  const lines = await intern.locator("#history li").allTextContents();
  assert.ok(lines.every((l) => !l.includes("Days")), `no hidden field: ${lines}`);
});

// ---- v1.3: row grants and views ----------------------------------------------

test("the intern sees only the tasks they own: a task given to them enters, one taken away leaves", async () => {
  const alice = await open(A, "alice", "t-rows");
  const intern = await open(B, "eli", "t-rows", "", "&role=intern", 5);
  assert.deepEqual(await shown(intern), OWNED.eli);
  assert.deepEqual(await intern.evaluate(() => window.rtsync.table.records().map((r) => r.recordId)), OWNED.eli,
    "nothing else is held");
  await cell(alice, "r06", "owner").fill("eli");
  await cell(alice, "r06", "owner").press("Tab");
  await expectRows(intern, ["r05", "r06", "r11", "r17", "r23", "r29"]);
  await expectValue(intern, "r06", "task", await cell(alice, "r06", "task").inputValue());
  await edit(alice, "r05", "owner", "bob");
  await expectRows(intern, ["r06", "r11", "r17", "r23", "r29"]);
  // Giving one of their tasks away would take it out of their rows: refused, rolled back.
  const refused = await intern.evaluate(() => window.rtsync.table.set("r11", { owner: "bob" }));
  assert.equal(refused.status, "rejected");
  assert.equal(refused.error?.code, "forbidden");
  await expectValue(intern, "r11", "owner", "eli");
  await settled(alice);
  await settled(intern);
  const full = await state(alice);
  assert.deepEqual(await state(intern), full.filter(([, , f]) => f.owner === "eli").map(([id, v, fields]) => {
    const { estimate, ...rest } = fields;
    return [id, v, rest];
  }), "the intern's rows equal alice's, versions included");
});

test("a record enters and leaves My tasks when its owner changes, and switching views keeps the grid right", async () => {
  const bob = await open(A, "bob", "t-mine");
  const alice = await open(B, "alice", "t-mine", "", "&view=my-tasks", 5);
  assert.deepEqual(await shown(alice), OWNED.alice);
  await edit(bob, "r02", "owner", "alice");
  await expectRows(alice, ["r01", "r02", "r07", "r13", "r19", "r25"]);
  await alice.waitForFunction(() => [...document.querySelectorAll("#activity li")]
    .some((li) => li.textContent === "r02 came into My tasks"), null, { timeout: WAIT });
  await edit(bob, "r07", "owner", "bob");
  await expectRows(alice, ["r01", "r02", "r13", "r19", "r25"]);
  // Her own edit gives r13 away: it leaves her view too.
  await edit(alice, "r13", "owner", "chen");
  await expectRows(alice, ["r01", "r02", "r19", "r25"]);
  await expectValue(bob, "r13", "owner", "chen");
  // All tasks, then back.
  await alice.selectOption("#view", "grid");
  await alice.waitForSelector("body[data-ready='1'][data-view='grid']", { timeout: WAIT });
  await alice.waitForFunction(() => document.querySelectorAll("tr[data-record]").length === 30, null, { timeout: WAIT });
  await edit(bob, "r03", "owner", "alice");
  await alice.selectOption("#view", "my-tasks");
  await expectRows(alice, ["r01", "r02", "r03", "r19", "r25"]);
  await settled(alice);
  await settled(bob);
  const mine = (await state(bob)).filter(([, , f]) => f.owner === "alice");
  assert.deepEqual(await state(alice), mine, "My tasks equals bob's table filtered by owner");
});
