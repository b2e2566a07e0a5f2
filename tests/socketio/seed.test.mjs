// The seed's Socket.IO frontend code, as it is, on the npm socket.io-client
// against two real rtsync sidecars and one Redis (started by
// tests/socketio.rs): docs/protocol.md section 10.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";

const URLS = (process.env.RTSYNC_HTTP_URLS ?? "").split(",").filter(Boolean);
const TOKENS = JSON.parse(process.env.RTSYNC_TOKENS ?? "{}");
const sockets = [];
after(() => sockets.forEach((s) => s.close()));

/**
 * A socket of `user` on sidecar `i` with socket.io-client's defaults
 * (long-polling first, then the upgrade to WebSocket), token in `auth`.
 */
function connect(user, i = 0, extra = {}) {
  const socket = io(URLS[i % URLS.length], {
    auth: { token: TOKENS[user] }, reconnection: false, ...extra,
  });
  sockets.push(socket);
  return socket;
}

/** The next `event` on `socket` (its first argument), within `ms`. */
function next(socket, event, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    socket.once(event, (arg) => {
      clearTimeout(timer);
      resolve(arg);
    });
  });
}

/** Emits with an acknowledgement; resolves with the callback's argument. */
function ask(socket, event, data) {
  return socket.timeout(10_000).emitWithAck(event, data);
}

async function until(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a JWT in the CONNECT auth is accepted before the connection is", async () => {
  const s = connect("alice");
  const authenticated = next(s, "authenticated");
  await next(s, "connect");
  assert.equal(s.connected, true);
  assert.equal((await authenticated).userId, "alice");
});

test("the default client connects by long-polling, then upgrades to WebSocket", async () => {
  const s = connect("alice");
  const first = new Promise((r) => s.io.on("open", () => r(s.io.engine.transport.name)));
  const upgraded = new Promise((r) => s.io.engine?.on?.("upgrade", r) ?? s.io.on("open", () => s.io.engine.on("upgrade", r)));
  await next(s, "authenticated");
  assert.equal(await first, "polling");
  await upgraded;
  await until("the upgrade", () => s.io.engine.transport.name === "websocket");
  // Requests keep working across the upgrade.
  const sub = await ask(s, "subscribe_to_table", { tableId: "sio-up" });
  assert.equal(sub.tableId, "sio-up");
});

test("WebSocket-only clients connect without polling", async () => {
  const s = connect("bob", 1, { transports: ["websocket"] });
  await next(s, "authenticated");
  assert.equal(s.io.engine.transport.name, "websocket");
  const sub = await ask(s, "subscribe_to_table", { tableId: "sio-ws" });
  assert.equal(sub.tableId, "sio-ws");
});

test("polling-only clients work without the upgrade", async () => {
  const a = connect("alice", 0, { transports: ["polling"] });
  const b = connect("bob", 1, { transports: ["polling"] });
  await Promise.all([next(a, "authenticated"), next(b, "authenticated")]);
  await ask(b, "subscribe_to_table", { tableId: "sio-poll" });
  const change = next(b, "record_change");
  const r = await ask(a, "record_change", {
    type: "create", recordId: "r1", tableId: "sio-poll", changes: [{ fieldId: "f", newValue: 1 }],
  });
  assert.equal(r.status, "applied");
  assert.equal((await change).id, r.eventId);
  assert.equal(a.io.engine.transport.name, "polling");
});

test("a bad JWT in auth is a connect_error with its code", async () => {
  const s = io(URLS[0], { auth: { token: "not-a-jwt" }, reconnection: false });
  sockets.push(s);
  const err = await next(s, "connect_error");
  assert.equal(err.data?.code, "unauthenticated");
  assert.equal(s.connected, false);
});

test("the authenticate event works as on /ws", async () => {
  const s = io(URLS[1], { reconnection: false });
  sockets.push(s);
  await next(s, "connect");
  const authenticated = next(s, "authenticated");
  s.emit("authenticate", { token: TOKENS.bob });
  assert.equal((await authenticated).userId, "bob");
});

test("a record change reaches a subscriber on the other sidecar; the ack is the CommitResult", async () => {
  const a = connect("alice", 0);
  const b = connect("bob", 1);
  await Promise.all([next(a, "authenticated"), next(b, "authenticated")]);
  const users = next(b, "table_users");
  const sub = await ask(b, "subscribe_to_table", { tableId: "sio-t1" });
  assert.equal(sub.tableId, "sio-t1");
  assert.match(sub.lastEventId, /^\d+-\d+$/);
  assert.ok(Array.isArray(await users));
  const joined = next(b, "user_joined");
  await ask(a, "subscribe_to_table", { tableId: "sio-t1" });
  assert.equal((await joined).userId, "alice");
  const change = next(b, "record_change");
  const result = await ask(a, "record_change", {
    type: "create", recordId: "r1", tableId: "sio-t1", changes: [{ fieldId: "f1", newValue: "hello" }],
  });
  assert.equal(result.status, "applied");
  assert.equal(result.version, 1);
  const e = await change;
  for (const k of ["id", "type", "entityType", "entityId", "tableId", "userId", "timestamp", "version", "changes"]) {
    assert.ok(k in e, `ChangeEvent has ${k}`);
  }
  assert.equal(e.id, result.eventId);
  assert.deepEqual(e.changes, [{ fieldId: "f1", newValue: "hello", oldVersion: 0 }]);
});

test("a failed request with a callback gets {error}; without one an error event", async () => {
  const s = connect("alice");
  await next(s, "authenticated");
  const answer = await ask(s, "subscribe_to_table", { tableId: "bad{id}" });
  assert.equal(answer.error?.code, "bad_request");
  const err = next(s, "error");
  s.emit("record_change", { type: "update" });
  const e = await err;
  assert.equal(e.code, "bad_request");
  assert.equal(e.event, "record_change");
});

test("heartbeat, cursors and the other presence events", async () => {
  const a = connect("alice", 0);
  const b = connect("bob", 1);
  await Promise.all([next(a, "authenticated"), next(b, "authenticated")]);
  await ask(a, "subscribe_to_table", { tableId: "sio-t2" });
  await ask(b, "subscribe_to_table", { tableId: "sio-t2" });
  const ack = next(a, "heartbeat_ack");
  a.emit("heartbeat", { tableId: "sio-t2" });
  assert.equal(typeof (await ack).timestamp, "number");
  const cursor = next(b, "cursor_position");
  a.emit("cursor_position", { tableId: "sio-t2", cursor: { recordId: "r1", fieldId: "f1" } });
  const c = await cursor;
  assert.equal(c.userId, "alice");
  assert.deepEqual(c.cursor, { recordId: "r1", fieldId: "f1" });
  const left = next(b, "user_left", 15_000);
  a.disconnect();
  assert.equal((await left).userId, "alice");
});

test("sync_offline_changes takes the seed's plain array", async () => {
  const s = connect("carol");
  await next(s, "authenticated");
  await ask(s, "subscribe_to_table", { tableId: "sio-t3" });
  const complete = next(s, "offline_sync_complete");
  const answer = await ask(s, "sync_offline_changes", [
    { type: "create", entityId: "r1", tableId: "sio-t3", changes: [{ fieldId: "f", newValue: 1 }], clientChangeId: "c1" },
    { type: "update", entityId: "r1", tableId: "sio-t3", changes: [{ fieldId: "f", newValue: 2 }], clientChangeId: "c2" },
  ]);
  assert.equal(answer.applied, 2);
  assert.equal((await complete).applied, 2);
});

test("an unknown namespace gets CONNECT_ERROR", async () => {
  const base = URLS[0];
  const s = io(`${base}/other`, { reconnection: false });
  sockets.push(s);
  const err = await next(s, "connect_error");
  assert.match(err.message, /namespace/i);
});

test("the seed's reconnect (authenticate, subscribe, recover back to back) converges under writes", async () => {
  const table = "sio-conv";
  const writer = connect("alice", 0);
  await next(writer, "authenticated");
  let writing = true;
  let n = 0;
  const writes = (async () => {
    while (writing) {
      n += 1;
      await ask(writer, "record_change", {
        type: "update", recordId: `r${n % 5}`, tableId: table, changes: [{ fieldId: "f", newValue: n }],
      });
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  // The app: applies whatever arrives, no version rule.
  const state = new Map();
  const seen = [];
  let lastEventId;
  const apply = (events) => {
    for (const e of events) {
      seen.push(e.id);
      lastEventId = e.id;
      const rec = state.get(e.entityId) ?? {};
      for (const c of e.changes ?? []) rec[c.fieldId] = c.newValue;
      state.set(e.entityId, rec);
    }
  };
  const listen = (s) => {
    s.on("record_change", (e) => apply([e]));
    for (const name of ["batch_changes", "missed_events", "recent_changes"]) s.on(name, (list) => apply(list));
  };
  const first = connect("bob", 1, { transports: ["websocket"] });
  listen(first);
  await next(first, "authenticated");
  await ask(first, "subscribe_to_table", { tableId: table });
  await until("some events", () => seen.length >= 20);
  first.disconnect();
  const before = seen.length;
  await until("writes while away", () => n > before + 60);
  // The seed's reconnect: three emits in its connect handler.
  const s = io(URLS[1], { reconnection: false });
  sockets.push(s);
  listen(s);
  const order = seen.length;
  s.on("connect", () => {
    s.emit("authenticate", { token: TOKENS.bob });
    s.emit("subscribe_to_table", { tableId: table });
    s.emit("recover_connection", { tableId: table, lastEventId });
  });
  await next(s, "connection_recovered");
  await until("more live events", () => seen.length > order + 30);
  writing = false;
  await writes;
  // Everything written arrives; then the app's table equals the server's.
  const records = async () => {
    const page = await ask(s, "load_records", { tableId: table, limit: 1000 });
    return page.records;
  };
  let server;
  const deadline = Date.now() + 10_000;
  for (;;) {
    server = await records();
    const equal = server.every((r) => state.get(r.recordId)?.f === r.fields.f);
    if (equal || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const r of server) assert.equal(state.get(r.recordId)?.f, r.fields.f, `record ${r.recordId}`);
  const sorted = [...seen].sort((a, b) => {
    const [am, as] = a.split("-").map(BigInt);
    const [bm, bs] = b.split("-").map(BigInt);
    return am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : am < bm ? -1 : 1;
  });
  assert.deepEqual(seen, sorted, "every event in stream order");
  assert.equal(new Set(seen).size, seen.length, "every event once");
});

import msgpackParser from "socket.io-msgpack-parser";

test("the msgpack parser is recognised per connection, over polling and WebSocket", async () => {
  for (const transports of [["websocket"], ["polling"], ["polling", "websocket"]]) {
    const a = connect("alice", 0, { parser: msgpackParser, transports });
    const b = connect("bob", 1, { transports: ["websocket"] }); // the default parser, beside it
    await Promise.all([next(a, "authenticated"), next(b, "authenticated")]);
    const table = `sio-mp-${transports.join("-")}`;
    const sub = await ask(a, "subscribe_to_table", { tableId: table });
    assert.equal(sub.tableId, table);
    await ask(b, "subscribe_to_table", { tableId: table });
    const seenByA = next(a, "record_change");
    const r = await ask(b, "record_change", {
      type: "create", recordId: "r1", tableId: table, changes: [{ fieldId: "f", newValue: { deep: [1.5, "x"] } }],
    });
    assert.equal(r.status, "applied");
    // a gets b's change in the msgpack parser's form.
    const ea = await seenByA;
    assert.equal(ea.id, r.eventId, transports.join(","));
    assert.deepEqual(ea.changes, [{ fieldId: "f", newValue: { deep: [1.5, "x"] }, oldVersion: 0 }]);
    const answer = await ask(a, "subscribe_to_table", { tableId: "bad{id}" });
    assert.equal(answer.error?.code, "bad_request");
    a.close();
    b.close();
  }
});

test("the msgpack parser connects without auth, then authenticates with the event, over polling and WebSocket", async () => {
  // The seed's frontend style: io(url, {parser}) with no auth payload.
  for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
    const s = io(URLS[1], { parser: msgpackParser, transports, reconnection: false });
    sockets.push(s);
    await next(s, "connect");
    assert.equal(s.connected, true, transports.join(","));
    const authenticated = next(s, "authenticated");
    s.emit("authenticate", { token: TOKENS.bob });
    assert.equal((await authenticated).userId, "bob");
    const table = `sio-mp-noauth-${transports.join("-")}`;
    const sub = await ask(s, "subscribe_to_table", { tableId: table });
    assert.equal(sub.tableId, table);
    const r = await ask(s, "record_change", {
      type: "create", recordId: "r1", tableId: table, changes: [{ fieldId: "f", newValue: 7 }],
    });
    assert.equal(r.status, "applied");
    s.close();
  }
});

test("field grants hold over Socket.IO: hidden fields masked in both parsers, forbidden writes refused", async () => {
  const SECRET = "SALARY-5551234";
  for (const [i, extra] of [[0, {}], [1, { parser: msgpackParser, transports: ["websocket"] }]]) {
    const table = `sio-fg-${i}`;
    const intern = connect("intern", 1, extra);
    const alice = connect("alice", 0, { transports: ["websocket"] });
    await Promise.all([next(intern, "authenticated"), next(alice, "authenticated")]);
    const sub = await ask(intern, "subscribe_to_table", { tableId: table });
    assert.deepEqual(sub.fields, { "*": "rw", salary: "none", status: "r" });
    const seen = [];
    intern.on("record_change", (e) => seen.push(e));
    const r = await ask(alice, "record_change", {
      type: "create", recordId: "r1", tableId: table, baseId: "b",
      changes: [{ fieldId: "name", newValue: "Ann" }, { fieldId: "salary", newValue: SECRET }],
    });
    assert.equal(r.status, "applied");
    await until("the masked event", () => seen.length === 1);
    assert.deepEqual(seen[0].changes, [{ fieldId: "name", newValue: "Ann", oldVersion: 0 }]);
    assert.ok(!JSON.stringify(seen).includes(SECRET));
    const refused = await ask(intern, "record_change", {
      type: "update", recordId: "r1", tableId: table, baseId: "b", changes: [{ fieldId: "status", newValue: "done" }],
    });
    assert.equal(refused.error?.code, "forbidden");
    assert.match(refused.error.message, /field status/);
    const page = await ask(intern, "load_records", { tableId: table });
    assert.deepEqual(page.records[0].fields, { name: "Ann" });
    intern.close();
    alice.close();
  }
});

test("binary arguments of the default parser arrive as their bytes (attachments), over polling and WebSocket", async () => {
  for (const transports of [["polling"], ["websocket"]]) {
    const a = connect("alice", 0, { transports });
    const b = connect("bob", 1, { transports: ["websocket"] });
    await Promise.all([next(a, "authenticated"), next(b, "authenticated")]);
    const table = `sio-bin-${transports[0]}`;
    await ask(a, "subscribe_to_table", { tableId: table });
    await ask(b, "subscribe_to_table", { tableId: table });
    const seenByB = next(b, "record_change");
    // A Buffer makes socket.io-client send a BINARY_EVENT with one attachment.
    const r = await ask(a, "record_change", {
      type: "create", recordId: "r1", tableId: table,
      changes: [{ fieldId: "blob", newValue: Buffer.from([1, 2, 255]) }, { fieldId: "n", newValue: 1 }],
    });
    assert.equal(r.status, "applied", transports[0]);
    const e = await seenByB;
    assert.deepEqual(e.changes, [{ fieldId: "blob", newValue: [1, 2, 255], oldVersion: 0 }, { fieldId: "n", newValue: 1, oldVersion: 0 }]);
    a.close();
    b.close();
  }
});

test("binary attachments over RTS_MAX_FRAME_BYTES / 8 are refused as payload_too_large, and the connection goes on", async () => {
  const a = connect("alice", 0, { transports: ["websocket"] });
  await next(a, "authenticated");
  const table = "sio-bin-big";
  await ask(a, "subscribe_to_table", { tableId: table });
  // 200 KB of attachment, over 1 MiB / 8: refused before it is dispatched.
  const refused = await ask(a, "record_change", {
    type: "create", recordId: "r1", tableId: table,
    changes: [{ fieldId: "blob", newValue: Buffer.alloc(200_000, 7) }],
  });
  assert.equal(refused.error?.code, "payload_too_large");
  const ok = await ask(a, "record_change", {
    type: "create", recordId: "r2", tableId: table, changes: [{ fieldId: "blob", newValue: Buffer.from([7]) }],
  });
  assert.equal(ok.status, "applied");
  a.close();
});
