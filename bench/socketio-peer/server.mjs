// The peer rtsync is measured against: a Socket.IO 4 server with the Redis
// Streams adapter, implementing the events of rtsync's protocol that the
// fan-out load uses, as a Node app would before adopting rtsync:
//   authenticate {userId}            -> ack {userId}
//   subscribe_to_table {tableId}     -> joins the table's room, ack
//   unsubscribe_from_table {tableId} -> leaves it, ack
//   record_change {tableId, recordId, type, changes}
//       -> one atomic script in Redis: the record's version +1 and the event
//          appended to the table's stream (the same source of truth as
//          rtsync), then `record_change` to every other socket in the room
//          (through the adapter, so sockets on other instances get it too),
//          and the ack {status, eventId, version}
//   cursor_position {tableId, cursor} -> relayed to the room
// Usage: PORT=0 REDIS_URL=redis://127.0.0.1:6379 node server.mjs
// PER_MESSAGE_DEFLATE=1 turns on Socket.IO's `perMessageDeflate` (threshold
// 1024 bytes, its default), the per-connection deflate rtsync is compared with.
// Prints "listening <port>" once it accepts connections.
import { createServer } from "node:http";
import { createClient } from "redis";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";

const COMMIT = `
local v = redis.call('HINCRBY', KEYS[2], '_v', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*',
  'type', ARGV[1], 'entityType', 'record', 'entityId', ARGV[2], 'userId', ARGV[3],
  'version', v, 'changes', ARGV[4])
return {id, v}`;

const redis = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
redis.on("error", (e) => console.error("redis:", e.message));
await redis.connect();
const sha = await redis.scriptLoad(COMMIT);

const http = createServer();
const perMessageDeflate = process.env.PER_MESSAGE_DEFLATE === "1" ? { threshold: 1024 } : false;
const io = new Server(http, {
  adapter: createAdapter(redis), serveClient: false, transports: ["websocket"], perMessageDeflate,
});

const fail = (ack, code, message) => typeof ack === "function" && ack({ error: { code, message } });
const isId = (s) => typeof s === "string" && s.length > 0 && s.length <= 128;

io.on("connection", (socket) => {
  socket.on("authenticate", (data, ack) => {
    if (!isId(data?.userId)) return fail(ack, "bad_request", "userId is required");
    socket.data.user = data.userId;
    ack?.({ userId: data.userId });
  });
  socket.on("subscribe_to_table", (data, ack) => {
    if (!socket.data.user) return fail(ack, "unauthenticated", "authenticate first");
    if (!isId(data?.tableId)) return fail(ack, "bad_request", "tableId is required");
    socket.join(`table:${data.tableId}`);
    ack?.({ tableId: data.tableId });
  });
  socket.on("unsubscribe_from_table", (data, ack) => {
    socket.leave(`table:${data?.tableId}`);
    ack?.({});
  });
  socket.on("record_change", async (data, ack) => {
    if (!socket.data.user) return fail(ack, "unauthenticated", "authenticate first");
    const { tableId, recordId, type = "update", changes = [] } = data ?? {};
    if (!isId(tableId) || !isId(recordId)) return fail(ack, "bad_request", "tableId and recordId are required");
    const text = JSON.stringify(changes);
    try {
      const [id, version] = await redis.evalSha(sha, {
        keys: [`peer:{${tableId}}:events`, `peer:{${tableId}}:rec:${recordId}`],
        arguments: [type, recordId, socket.data.user, text],
      });
      const event = {
        id, type, entityType: "record", entityId: recordId, tableId, userId: socket.data.user,
        version: Number(version), changes, timestamp: Date.now(),
      };
      socket.to(`table:${tableId}`).emit("record_change", event);
      ack?.({ status: "applied", eventId: id, version: Number(version) });
    } catch (e) {
      fail(ack, "unavailable", e.message);
    }
  });
  socket.on("cursor_position", (data) => {
    if (!socket.data.user || !isId(data?.tableId)) return;
    socket.to(`table:${data.tableId}`).volatile.emit("cursor_position", { userId: socket.data.user, cursor: data.cursor });
  });
});

http.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});
const stop = () => io.close(() => redis.quit().finally(() => process.exit(0)));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
