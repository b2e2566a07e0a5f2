// The transport against a fake WebSocket: reconnect backoff.
import { test } from "node:test";
import assert from "node:assert/strict";
import { encode, decode } from "@msgpack/msgpack";
import { Transport } from "../dist/index.js";

/** A server that authenticates everyone, then drops the connection `lifeMs` later. */
function flakyServer(lifeMs) {
  const opened = [];
  class FakeSocket {
    readyState = 0;
    binaryType = "blob";
    onopen = null; onmessage = null; onclose = null; onerror = null;
    constructor() {
      opened.push(Date.now());
      setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 1);
    }
    send(bytes) {
      const [event, , rid] = decode(bytes);
      if (event === "authenticate") {
        setTimeout(() => {
          this.onmessage?.({ data: encode(["ack", { userId: "u", connectionId: "c", serverTime: 0 }, rid]).slice().buffer });
          this.life = setTimeout(() => this.close(1006, ""), lifeMs);
        }, 1);
      }
    }
    close(code = 1000, reason = "") {
      clearTimeout(this.life);
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 1);
    }
  }
  return { FakeSocket, opened };
}

const options = (WebSocket) => ({
  url: "ws://fake", devUser: { userId: "u", userName: "u" }, encoding: "msgpack", backoffBaseMs: 100,
  backoffMaxMs: 10_000, stableAfterMs: 5_000, requestTimeoutMs: 1_000, WebSocket,
});

test("a connection that fails right after opening does not reset the backoff", async () => {
  const { FakeSocket, opened } = flakyServer(10);
  const t = new Transport(options(FakeSocket));
  t.start();
  await new Promise((r) => setTimeout(r, 2_000));
  t.stop();
  // Growing caps (100, 200, 400, 800, 1600 ms, full jitter) allow a handful
  // of attempts in 2 s; a backoff reset by each short-lived connection would
  // reconnect every ~50 ms (about 30 attempts).
  assert.ok(opened.length <= 10, `${opened.length} connection attempts in 2 s`);
  assert.ok(opened.length >= 2, "it does reconnect");
});

test("stop() then start() back to back connects again at once", async () => {
  const { FakeSocket } = flakyServer(60_000);
  const t = new Transport(options(FakeSocket));
  const statuses = [];
  t.on("status", (s) => statuses.push(s.status));
  t.start();
  await new Promise((r) => t.once("open", r));
  t.stop("offline");
  t.start();
  const began = Date.now();
  await new Promise((r) => t.once("open", r));
  assert.ok(Date.now() - began < 500, "online again without waiting out a backoff");
  assert.equal(t.status, "online");
  t.stop();
});

test("a token goes in the upgrade request, and no authenticate frame is sent", async () => {
  const offered = [];
  const frames = [];
  class UpgradeSocket {
    readyState = 0;
    binaryType = "blob";
    onopen = null; onmessage = null; onclose = null; onerror = null;
    constructor(url, protocols) {
      offered.push(protocols);
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
        // The server verified the token at upgrade.
        this.onmessage?.({ data: encode(["authenticated", { userId: "tok-user", connectionId: "c", serverTime: 0 }]).slice().buffer });
      }, 1);
    }
    send(bytes) { frames.push(decode(bytes)[0]); }
    close() { this.readyState = 3; }
  }
  const t = new Transport({ ...options(UpgradeSocket), devUser: undefined, token: "a.b-c_d" });
  t.start();
  await new Promise((r) => t.once("open", r));
  assert.deepEqual(offered, [["rtsync.v1.msgpack", "rtsync.token.a.b-c_d"]]);
  assert.equal(t.userId, "tok-user");
  assert.deepEqual(frames, [], "no authenticate frame");
  t.stop();
});

test("against a sidecar that ignores the token subprotocol, authenticate is sent after a second", async () => {
  const frames = [];
  class OldServerSocket {
    readyState = 0;
    binaryType = "blob";
    onopen = null; onmessage = null; onclose = null; onerror = null;
    constructor() { setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 1); }
    send(bytes) {
      const [event, , rid] = decode(bytes);
      frames.push(event);
      if (event === "authenticate") {
        setTimeout(() => this.onmessage?.({ data: encode(["ack", { userId: "old", connectionId: "c", serverTime: 0 }, rid]).slice().buffer }), 1);
      }
    }
    close() { this.readyState = 3; }
  }
  const t = new Transport({ ...options(OldServerSocket), devUser: undefined, token: "a.b.c" });
  const began = Date.now();
  t.start();
  await new Promise((r) => t.once("open", r));
  assert.ok(Date.now() - began >= 900, "waited for the upgrade's answer first");
  assert.deepEqual(frames, ["authenticate"]);
  assert.equal(t.userId, "old");
  t.stop();
});
