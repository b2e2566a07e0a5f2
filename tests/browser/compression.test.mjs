// The demo with compression on (the default): Chromium offers
// permessage-deflate on the demo's WebSocket, the sidecar's handshake
// answer carries it (read through the DevTools protocol's Network domain),
// and a long edit (compressed on the wire, above RTS_COMPRESSION_THRESHOLD)
// reaches a user on the other sidecar. Run by tests/browser.rs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const A = process.env.RTSYNC_DEMO_A;
const B = process.env.RTSYNC_DEMO_B;
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const WAIT = 20_000;

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

async function ready(page) {
  await page.waitForSelector("#status.online", { timeout: WAIT });
  await page.waitForFunction(() => document.querySelectorAll("tr[data-record]").length === 30, null, { timeout: WAIT });
}

/// A demo page of `user`, with the WebSocket handshake answers' headers.
async function open(base, user, table) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  const handshakes = [];
  cdp.on("Network.webSocketHandshakeResponseReceived", (e) => handshakes.push(e.response.headers));
  await page.goto(`${base}/demo/?user=${user}&table=${table}`);
  await ready(page);
  return { page, handshakes };
}

const header = (headers, name) =>
  Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];

test("the demo's WebSocket handshake answer carries permessage-deflate and a long edit converges", async () => {
  const table = `t-deflate-${Date.now()}`;
  const alice = await open(A, "alice", table);
  const bob = await open(B, "bob", table);
  for (const { handshakes } of [alice, bob]) {
    const extensions = handshakes.map((h) => header(h, "sec-websocket-extensions"));
    assert.ok(extensions.length > 0, "a WebSocket handshake was seen");
    assert.ok(extensions.every((v) => /^permessage-deflate/.test(v ?? "")), JSON.stringify(handshakes));
  }
  const long = Array.from({ length: 400 }, (_, i) => `word${i % 13}`).join(" ");
  const cell = alice.page.locator('[data-cell="r02|task"]');
  await cell.fill(long);
  await cell.press("Tab");
  await bob.page.waitForFunction(
    (v) => document.querySelector('[data-cell="r02|task"]')?.value === v,
    long,
    { timeout: WAIT },
  );
});
