// The demo grid in a real browser: two users on two sidecars.
// Run by tests/browser.rs, which starts Redis and two sidecars with --demo
// and passes their base URLs in RTSYNC_DEMO_A / RTSYNC_DEMO_B.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const A = process.env.RTSYNC_DEMO_A;
const B = process.env.RTSYNC_DEMO_B;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT = 15_000;

let browser;
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

async function open(base, user, table) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${user}] ${e.message}`));
  await page.goto(`${base}/demo/?user=${user}&table=${table}`);
  await page.waitForSelector("#status.online", { timeout: WAIT });
  await page.waitForFunction((u) => [...document.querySelectorAll(".user")].some((e) => e.dataset.user === u), user, { timeout: WAIT });
  return page;
}

const cell = (page, r, f) => page.locator(`input[data-cell="${r}|${f}"]`);
async function edit(page, r, f, value) {
  await cell(page, r, f).fill(value);
  await cell(page, r, f).press("Tab");
}
async function expectValue(page, r, f, value) {
  await page.waitForFunction(
    ([k, v]) => document.querySelector(`input[data-cell="${k}"]`)?.value === v,
    [`${r}|${f}`, value],
    { timeout: WAIT },
  );
}
const grid = (page) => page.evaluate(() => [...document.querySelectorAll("input[data-cell]")].map((i) => `${i.dataset.cell}=${i.value}`));

test("two users on two sidecars see each other's edits and cursors", async () => {
  const alice = await open(A, "alice", "t-live");
  const bob = await open(B, "bob", "t-live");
  await alice.waitForSelector('.user[data-user="bob"]', { timeout: WAIT });
  await edit(alice, "r1", "name", "hello from alice");
  await expectValue(bob, "r1", "name", "hello from alice");
  await edit(bob, "r2", "status", "done");
  await expectValue(alice, "r2", "status", "done");
  await cell(bob, "r3", "owner").focus();
  await alice.waitForSelector('td[data-cursor-of="bob"].remote input[data-cell="r3|owner"]', { timeout: WAIT });
  assert.equal(await alice.locator('td[data-cursor-of="bob"]').count(), 1, "one cursor per user");
});

test("offline edits sync back and both grids end the same", async () => {
  const alice = await open(A, "alice", "t-offline");
  const bob = await open(B, "bob", "t-offline");
  await bob.check("#offline");
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  await edit(bob, "r3", "owner", "bob-offline");
  await edit(alice, "r4", "due", "friday");
  await bob.uncheck("#offline");
  await bob.waitForSelector("#status.online", { timeout: WAIT });
  await expectValue(alice, "r3", "owner", "bob-offline");
  await expectValue(bob, "r4", "due", "friday");
  assert.deepEqual(await grid(alice), await grid(bob));
});

test("a conflicting edit is rolled back to the winning value", async () => {
  const alice = await open(A, "alice", "t-conflict");
  const bob = await open(B, "bob", "t-conflict");
  await edit(alice, "r5", "name", "first");
  await expectValue(bob, "r5", "name", "first");
  // Bob goes offline and edits the same field alice changes meanwhile.
  await bob.check("#offline");
  await bob.waitForSelector("#status.offline", { timeout: WAIT });
  await edit(alice, "r5", "name", "alice wins");
  await edit(bob, "r5", "name", "bob loses");
  await bob.uncheck("#offline");
  await bob.waitForSelector('td[data-rolled-back="1"]', { timeout: WAIT });
  await expectValue(bob, "r5", "name", "alice wins");
  await expectValue(alice, "r5", "name", "alice wins");
});

test("a user name is shown as text, never run as HTML", async () => {
  const alice = await open(A, "alice", "t-xss");
  const context = await browser.newContext();
  const mallory = await context.newPage();
  const name = encodeURIComponent('<img src=x onerror="window.__xss=1">');
  await mallory.goto(`${B}/demo/?user=mallory&table=t-xss&name=${name}`);
  await mallory.waitForSelector("#status.online", { timeout: WAIT });
  await alice.waitForSelector('.user[data-user="mallory"]', { timeout: WAIT });
  const shown = await alice.locator('.user[data-user="mallory"]').textContent();
  assert.equal(shown, '<img src=x onerror="window.__xss=1">');
  assert.equal(await alice.locator("#users img").count(), 0);
  assert.equal(await alice.evaluate(() => window.__xss), undefined);
});
