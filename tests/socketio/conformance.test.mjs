// The npm socket.io-client against rtsync's standalone Engine.IO /
// Socket.IO layer: the conformance server of
// examples/socketio_conformance.rs, started by tests/socketio_conformance.rs
// (RTSYNC_CONFORMANCE_URL).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const URL = process.env.RTSYNC_CONFORMANCE_URL;
const sockets = [];
after(() => sockets.forEach((s) => s.close()));

function connect(nsp = "/", extra = {}) {
  const socket = io(URL + nsp, { reconnection: false, forceNew: true, ...extra });
  sockets.push(socket);
  return socket;
}

function next(socket, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

test("the default client connects by long-polling, upgrades, and gets its auth back", async () => {
  const s = connect("/", { auth: { token: "123" } });
  const [auth] = await next(s, "auth");
  assert.deepEqual(auth, { token: "123" });
  assert.equal(s.connected, true);
  if (s.io.engine.transport.name !== "websocket") await next(s.io.engine, "upgrade");
  assert.equal(s.io.engine.transport.name, "websocket");
  const back = next(s, "message-back");
  s.emit("message", 1, "2", { 3: [true] });
  assert.deepEqual(await back, [1, "2", { 3: [true] }]);
});

test("an emit with a callback gets the same arguments back", async () => {
  const s = connect();
  await next(s, "connect");
  const answer = await s.timeout(5_000).emitWithAck("message-with-ack", 1, "2", { x: null });
  assert.deepEqual(answer, 1, "emitWithAck resolves with the first argument");
  const all = await new Promise((r) => s.emit("message-with-ack", "a", "b", (...args) => r(args)));
  assert.deepEqual(all, ["a", "b"]);
});

test("binary arguments come back as binary, over polling and over WebSocket", async () => {
  for (const transports of [["polling"], ["websocket"]]) {
    const s = connect("/", { transports });
    await next(s, "connect");
    const back = next(s, "message-back");
    s.emit("message", Buffer.from([1, 2, 3]), { nested: Buffer.from([4]) });
    const [a, b] = await back;
    assert.deepEqual([...a], [1, 2, 3], transports[0]);
    assert.deepEqual([...b.nested], [4], transports[0]);
    const acked = await s.timeout(5_000).emitWithAck("message-with-ack", Buffer.from([9]));
    assert.deepEqual([...acked], [9], transports[0]);
  }
});

test("a WebSocket-only client connects without polling", async () => {
  const s = connect("/", { transports: ["websocket"] });
  await next(s, "connect");
  assert.equal(s.io.engine.transport.name, "websocket");
});

test("the /custom namespace emits auth; an unknown namespace is refused", async () => {
  const custom = connect("/custom", { auth: { who: "custom" } });
  const [auth] = await next(custom, "auth");
  assert.deepEqual(auth, { who: "custom" });
  const other = connect("/random");
  const [err] = await next(other, "connect_error");
  assert.equal(err.message, "Invalid namespace");
});

test("the heartbeat keeps an idle client connected across many ping intervals", async () => {
  const s = connect();
  await next(s, "connect");
  let pings = 0;
  s.io.engine.on("ping", () => pings++);
  await new Promise((r) => setTimeout(r, 1_500));
  assert.equal(s.connected, true);
  assert.ok(pings >= 3, `only ${pings} pings in 1.5 s at a 300 ms interval`);
});
