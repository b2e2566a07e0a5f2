// The app's endpoint for `rtsync sink`: POST /rtsync-events.
//
// It reads the raw body, checks `X-Rtsync-Signature` (HMAC-SHA256 with the
// shared secret, compared in constant time) before parsing anything, then
// writes the batch into PostgreSQL (apply.mjs) and answers 204. A bad
// signature or a body that is not a batch is 400 (rtsync dead-letters it);
// a database failure is 503 (rtsync sends the batch again).
//
// Settings: DATABASE_URL (postgres://...), RTSYNC_SINK_SECRET, PORT
// (default 8080; 0 picks a free one). It prints `listening <port>`.
import crypto from "node:crypto";
import http from "node:http";
import fs from "node:fs";
import pg from "pg";
import { applyBatch, applyBaseBatch } from "./apply.mjs";

const secret = process.env.RTSYNC_SINK_SECRET ?? "";
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
// An idle connection the database dropped: logged; the pool opens another.
pool.on("error", (err) => console.error("database connection lost:", err.message));
await pool.query(fs.readFileSync(new URL("./schema.sql", import.meta.url), "utf8"));

// How old a signed request may be: a captured request replayed later than
// this is refused.
const MAX_AGE_SECS = 300;

function matches(header, signed) {
  const expected = "sha256=" + crypto.createHmac("sha256", secret).update(signed).digest("hex");
  return typeof header === "string" && header.length === expected.length &&
    crypto.timingSafeEqual(Buffer.from(header), Buffer.from(expected));
}

// The timestamped signature (HMAC of "<X-Rtsync-Timestamp>." + body), and
// the timestamp within MAX_AGE_SECS of now; a sink older than that sends
// only X-Rtsync-Signature (HMAC of the body), checked then.
export function verify(raw, headers) {
  if (!secret) return true;
  const ts = headers["x-rtsync-timestamp"];
  if (typeof ts === "string") {
    const age = Math.abs(Date.now() / 1000 - Number(ts));
    if (!(age <= MAX_AGE_SECS)) return false;
    return matches(headers["x-rtsync-timestamp-signature"], Buffer.concat([Buffer.from(`${ts}.`), raw]));
  }
  return matches(headers["x-rtsync-signature"], raw);
}

const server = http.createServer(async (req, res) => {
  if (req.method !== "POST" || req.url !== "/rtsync-events") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks);
  if (!verify(raw, req.headers)) {
    res.writeHead(400).end("bad signature");
    return;
  }
  let batch;
  try {
    batch = JSON.parse(raw.toString("utf8"));
  } catch {
    res.writeHead(400).end("not JSON");
    return;
  }
  const isTable = typeof batch?.tableId === "string";
  const isBase = typeof batch?.baseId === "string";
  if ((!isTable && !isBase) || !Array.isArray(batch.events)) {
    res.writeHead(400).end("not a batch");
    return;
  }
  try {
    await (isTable ? applyBatch(pool, batch) : applyBaseBatch(pool, batch));
    res.writeHead(204).end();
  } catch (err) {
    console.error("cannot write the batch:", err.message);
    res.writeHead(503).end("database unavailable");
  }
});
server.listen(Number(process.env.PORT ?? 8080), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => server.close(() => pool.end().then(() => process.exit(0))));
}
