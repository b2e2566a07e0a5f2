// Where a row's field values live: the table and its key columns.
const RECORD_FIELDS = { table: "field_values", keys: ["table_id", "record_id"] };
const BASE_FIELDS = { table: "base_fields", keys: ["base_id"] };

// Sets each changed field of one row (`key` values for `where.keys`); a
// `null` or missing `newValue` clears the field, as in rtsync's state.
async function writeFields(client, where, key, changes) {
  const cols = [...where.keys, "field_id"];
  const match = cols.map((c, i) => `${c} = $${i + 1}`).join(" AND ");
  for (const c of changes ?? []) {
    const ids = [...key, c.fieldId];
    if (c.newValue === undefined || c.newValue === null) {
      await client.query(`DELETE FROM ${where.table} WHERE ${match}`, ids);
    } else {
      const params = cols.map((_, i) => `$${i + 1}`).join(", ");
      await client.query(
        `INSERT INTO ${where.table} (${cols.join(", ")}, value) VALUES (${params}, $${cols.length + 1})
         ON CONFLICT (${cols.join(", ")}) DO UPDATE SET value = EXCLUDED.value`,
        [...ids, JSON.stringify(c.newValue)],
      );
    }
  }
}

// Applies one batch of change events to PostgreSQL in one transaction.
//
// Events of a table arrive in stream order, at least once. Each event id is
// recorded in rtsync_events; an id seen before is skipped, so a batch
// delivered again changes nothing. A record event is applied only when its
// version is newer than the row's (a seed or a later edit may be ahead): a
// create or update sets its fields (`null` or no value clears a field, as in
// rtsync's state), a delete marks the record deleted and keeps its fields,
// and a create of a deleted record starts it afresh.
export function applyBatch(pool, { tableId, events }) {
  return applyOnce(pool, tableId, events, async (client, e) => {
    if (e.entityType !== "record" || typeof e.version !== "number") return false;
    const row = await client.query(
      "SELECT version, deleted FROM records WHERE table_id = $1 AND record_id = $2 FOR UPDATE",
      [tableId, e.entityId],
    );
    const held = row.rows[0];
    if (held && Number(held.version) >= e.version) return false; // not newer
    const deleted = e.type === "delete";
    await client.query(
      `INSERT INTO records (table_id, record_id, version, deleted) VALUES ($1, $2, $3, $4)
       ON CONFLICT (table_id, record_id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted`,
      [tableId, e.entityId, e.version, deleted],
    );
    if (deleted) return true;
    if (e.type === "create" && held?.deleted) {
      await client.query("DELETE FROM field_values WHERE table_id = $1 AND record_id = $2", [tableId, e.entityId]);
    }
    await writeFields(client, RECORD_FIELDS, [tableId, e.entityId], e.changes);
    return true;
  });
}

// Applies one batch of a base's events ({"baseId", "events"}: a base
// renamed, its icon changed, ...) the same way: once per event id, and
// only when the base's version is newer; `null` clears an attribute.
export function applyBaseBatch(pool, { baseId, events }) {
  return applyOnce(pool, `{${baseId}}`, events, async (client, e) => {
    if (e.entityType !== "base" || typeof e.version !== "number") return false;
    const row = await client.query("SELECT version FROM bases WHERE base_id = $1 FOR UPDATE", [baseId]);
    if (row.rows[0] && Number(row.rows[0].version) >= e.version) return false;
    await client.query(
      `INSERT INTO bases (base_id, version) VALUES ($1, $2)
       ON CONFLICT (base_id) DO UPDATE SET version = EXCLUDED.version`,
      [baseId, e.version],
    );
    await writeFields(client, BASE_FIELDS, [baseId], e.changes);
    return true;
  });
}

// One transaction for a batch of the stream `stream` (a table id, or
// `{baseId}`): each event id is recorded in rtsync_events, an id seen
// before is skipped, and `apply(client, event)` says whether it changed
// anything. Returns how many did.
async function applyOnce(pool, stream, events, apply) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    let applied = 0;
    for (const e of events) {
      const fresh = await client.query(
        "INSERT INTO rtsync_events (table_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [stream, e.id],
      );
      if (fresh.rowCount === 0) continue; // delivered before
      if (await apply(client, e)) applied++;
    }
    await client.query("COMMIT");
    return applied;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
