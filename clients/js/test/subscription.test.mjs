// A table's position and which events reach the app (PROTOCOL.md 3.1).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Subscription } from "../dist/index.js";

const ev = (id, extra = {}) => ({ id, type: "update", entityType: "record", entityId: "r", tableId: "t", userId: "u", timestamp: 0, version: 1, ...extra });

function sub(pending = new Set()) {
  const s = new Subscription("t", undefined, { isPending: (id) => pending.has(id) });
  const changes = [];
  s.on("change", (e) => changes.push(e.id));
  return { s, changes };
}

test("the position moves only forward, with what was received, and repeats are dropped", () => {
  const { s, changes } = sub();
  s.joined({ tableId: "t", lastEventId: "5-0", color: "#000" });
  assert.equal(s.position, "5-0");
  s.receive([ev("6-0"), ev("10-0"), ev("7-0"), ev("10-0"), ev("11-0")]);
  assert.deepEqual(changes, ["6-0", "10-0", "11-0"]);
  assert.equal(s.position, "11-0");
});

test("own acked changes do not move the position, and their events are not handed to the app after a recovery", () => {
  const { s, changes } = sub();
  s.joined({ tableId: "t", lastEventId: "5-0", color: "#000" });
  s.acked("9-0"); // own change, committed after another writer's 8-0
  assert.equal(s.position, "5-0", "an ack is not a received event");
  s.detach();
  assert.deepEqual(s.joinRequest(), { tableId: "t", lastEventId: "5-0" });
  s.joined({ tableId: "t", lastEventId: "12-0", color: "#000" }); // recovering: missed events follow
  s.receive([ev("8-0"), ev("9-0"), ev("12-0")]);
  s.recoveredAt("12-0", 3);
  assert.deepEqual(changes, ["8-0", "12-0"]);
  assert.equal(s.recovered, true);
  assert.equal(s.position, "12-0");
});

test("an event whose clientChangeId is still in the outbox is the user's own", () => {
  const { s, changes } = sub(new Set(["mine"]));
  s.joined({ tableId: "t", lastEventId: "1-0", color: "#000" });
  const seen = [];
  s.on("event", ({ event, own }) => seen.push([event.id, own]));
  s.receive([ev("2-0", { clientChangeId: "mine" }), ev("3-0", { clientChangeId: "theirs" })]);
  assert.deepEqual(changes, ["3-0"]);
  assert.deepEqual(seen, [["2-0", true], ["3-0", false]]);
});

test("a resync announced in the ack and again by its frame reloads once, from the new start", () => {
  const { s } = sub();
  s.joined({ tableId: "t", lastEventId: "5-0", color: "#000" });
  let resyncs = 0;
  s.on("resync", () => resyncs++);
  s.detach();
  s.joined({ tableId: "t", lastEventId: "2-0", color: "#000", resyncRequired: "stream_reset" });
  s.resyncFrame("stream_reset");
  assert.equal(resyncs, 1);
  assert.equal(s.position, "2-0");
  assert.equal(s.recovered, false);
});

test("an own edit whose answer was lost with its connection is not handed to the app when its event comes first", () => {
  const inFlight = new Set(["7-0"]);
  const s = new Subscription("t", undefined, { isPending: () => false, isInFlight: (e) => inFlight.has(e.id) });
  const changes = [];
  const events = [];
  s.on("change", (e) => changes.push(e.id));
  s.on("event", ({ event, own }) => events.push([event.id, own]));
  s.joined({ tableId: "t", lastEventId: "5-0", color: "#000" });
  s.receive([ev("6-0"), ev("7-0"), ev("8-0")]);
  assert.deepEqual(changes, ["6-0", "8-0"]);
  assert.deepEqual(events, [["6-0", false], ["7-0", true], ["8-0", false]], "LiveTable still applies it, in order");
});
