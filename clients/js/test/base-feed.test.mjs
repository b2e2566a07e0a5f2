// Base events: emitted once each, in order, never to a table; the position
// a rejoin sends as baseLastEventId.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BaseFeeds, Subscription } from "../dist/index.js";

const baseEvent = (id, name) => ({
  id, type: "update", entityType: "base", entityId: "b1", baseId: "b1", userId: "u",
  timestamp: 0, version: 1, changes: [{ fieldId: "name", newValue: name }],
});

test("a base event is emitted once, and a repeat at or before the position is dropped", () => {
  const feeds = new BaseFeeds();
  const got = [];
  feeds.on("base", (b) => got.push(b.event.id));
  feeds.joined("b1", "5-0");
  assert.equal(feeds.receive(baseEvent("4-0", "old")), true, "handled (dropped)");
  assert.equal(feeds.receive(baseEvent("6-0", "a")), true);
  assert.equal(feeds.receive(baseEvent("6-0", "a")), true);
  assert.equal(feeds.receive(baseEvent("7-0", "b")), true);
  assert.deepEqual(got, ["6-0", "7-0"]);
  assert.equal(feeds.position("b1"), "7-0");
});

test("a table's event is not a base event", () => {
  const feeds = new BaseFeeds();
  assert.equal(feeds.receive({ ...baseEvent("1-0", "x"), tableId: "t1", entityType: "record" }), false);
});

test("a later join's start does not move the position back or forward; a resync jumps to it", () => {
  const feeds = new BaseFeeds();
  feeds.joined("b1", "5-0");
  feeds.receive(baseEvent("6-0", "a"));
  feeds.joined("b1", "9-0"); // a rejoin: the missed events are replayed from 6-0
  assert.equal(feeds.position("b1"), "6-0");
  const resyncs = [];
  feeds.on("resync", (r) => resyncs.push(r));
  feeds.resync("b1", "history_trimmed");
  assert.equal(feeds.position("b1"), "9-0");
  assert.deepEqual(resyncs, [{ baseId: "b1", reason: "history_trimmed" }]);
});

test("a table of a base joins with its baseId and the base's position", () => {
  const feeds = new BaseFeeds();
  const sub = new Subscription("t1", undefined, { isPending: () => false }, { id: "b1", position: () => feeds.position("b1") });
  assert.deepEqual(sub.joinRequest(), { tableId: "t1", baseId: "b1" });
  feeds.joined("b1", "3-0");
  assert.deepEqual(sub.joinRequest(), { tableId: "t1", baseId: "b1", baseLastEventId: "3-0" });
});
