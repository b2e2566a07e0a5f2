// Seeds rtsync from PostgreSQL: every record of TABLE_ID with its version
// and fields, POSTed to the sidecar's seed route in chunks. rtsync keeps a
// record only when the given version is newer than the one it holds, so
// seeding again (or while users edit) never overwrites a newer edit.
//
// Settings: DATABASE_URL, RTSYNC_URL (http://sidecar:4000), RTSYNC_API_TOKEN,
// TABLE_ID, CHUNK (default 500, at most the sidecar's RTS_MAX_BATCH).
import pg from "pg";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
const tableId = process.env.TABLE_ID;
const chunk = Number(process.env.CHUNK ?? 500);
const { rows } = await pool.query(
  `SELECT r.record_id, r.version, r.deleted,
          coalesce(jsonb_object_agg(f.field_id, f.value) FILTER (WHERE f.field_id IS NOT NULL), '{}') AS fields
     FROM records r LEFT JOIN field_values f USING (table_id, record_id)
    WHERE r.table_id = $1 GROUP BY r.record_id, r.version, r.deleted ORDER BY r.record_id`,
  [tableId],
);
let written = 0;
let skipped = 0;
for (let i = 0; i < rows.length; i += chunk) {
  const records = rows.slice(i, i + chunk).map((r) => ({
    recordId: r.record_id, version: Number(r.version), deleted: r.deleted, fields: r.fields,
  }));
  const res = await fetch(`${process.env.RTSYNC_URL}/api/v1/sync/tables/${encodeURIComponent(tableId)}/records`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${process.env.RTSYNC_API_TOKEN}` },
    body: JSON.stringify({ records }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`seed refused: ${res.status} ${JSON.stringify(body)}`);
  written += body.data.written;
  skipped += body.data.skipped;
}
console.log(JSON.stringify({ tableId, records: rows.length, written, skipped }));
await pool.end();
