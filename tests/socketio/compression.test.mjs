// permessage-deflate (docs/protocol.md 1.1) with real clients: Node's `ws`
// with perMessageDeflate and the npm socket.io-client, against a sidecar
// started by tests/compression.rs (RTSYNC_URL, RTSYNC_TOKEN). Both compress
// every message they send (threshold 0) and read compressed pages.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { io } from "socket.io-client";

const URL = process.env.RTSYNC_URL;
const TOKEN = process.env.RTSYNC_TOKEN;
const big = Array.from({ length: 400 }, (_, i) => `cell ${i};`).join("");
const change = (recordId) => ({
  type: "update", recordId, tableId: "t", baseId: "b1",
  changes: [{ fieldId: "f1", newValue: big }],
});

test("ws with perMessageDeflate exchanges compressed frames and converges", async () => {
  const ws = new WebSocket(URL.replace("http", "ws") + "/ws", "rtsync.v1.json", {
    perMessageDeflate: { threshold: 0 },
  });
  const upgrade = new Promise((resolve) => ws.on("upgrade", resolve));
  const replies = new Map();
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString());
    if (m.length === 3) replies.get(m[2])?.(m);
  });
  const request = (rid, event, data) =>
    new Promise((resolve) => {
      replies.set(rid, resolve);
      ws.send(JSON.stringify([event, data, rid]));
    });
  await new Promise((resolve, reject) => { ws.on("open", resolve); ws.on("error", reject); });
  const res = await upgrade;
  assert.match(res.headers["sec-websocket-extensions"], /server_no_context_takeover/);
  assert.equal((await request(1, "authenticate", { token: TOKEN }))[0], "ack");
  assert.equal((await request(2, "record_change", change("ws1")))[1].status, "applied");
  const page = await request(3, "load_records", { tableId: "t", recordIds: ["ws1"] });
  assert.equal(page[1].records[0].fields.f1, big);
  ws.close();
});

test("socket.io-client with perMessageDeflate exchanges compressed frames and converges", async () => {
  const s = io(URL, { transports: ["websocket"], perMessageDeflate: { threshold: 0 }, reconnection: false, forceNew: true });
  await new Promise((resolve, reject) => { s.on("connect", resolve); s.on("connect_error", reject); });
  try {
    assert.ok(s.io.engine.transport.ws._extensions["permessage-deflate"], "negotiated");
    await s.emitWithAck("authenticate", { token: TOKEN });
    const ack = await s.emitWithAck("record_change", change("sio1"));
    assert.equal(ack.status, "applied");
    const page = await s.emitWithAck("load_records", { tableId: "t", recordIds: ["sio1"] });
    assert.equal(page.records[0].fields.f1, big);
  } finally {
    s.close();
  }
});

test("socket.io-client upgrading from long-polling negotiates compression on its WebSocket", async () => {
  const s = io(URL, { perMessageDeflate: { threshold: 0 }, reconnection: false, forceNew: true });
  await new Promise((resolve, reject) => { s.on("connect", resolve); s.on("connect_error", reject); });
  try {
    await new Promise((resolve) => {
      if (s.io.engine.transport.name === "websocket") resolve();
      else s.io.engine.once("upgrade", resolve);
    });
    assert.ok(s.io.engine.transport.ws._extensions["permessage-deflate"], "negotiated");
    await s.emitWithAck("authenticate", { token: TOKEN });
    const ack = await s.emitWithAck("record_change", change("sio2"));
    assert.equal(ack.status, "applied");
    const page = await s.emitWithAck("load_records", { tableId: "t", recordIds: ["sio2"] });
    assert.equal(page.records[0].fields.f1, big);
  } finally {
    s.close();
  }
});
