// Applies one batch of change events to PostgreSQL in one transaction.
//
// Events of a table arrive in stream order, at least once. Each event id is
// recorded in rtsync_events; an id seen before is skipped, so a batch
// delivered again changes nothing. A record event is applied only when its
// version is newer than the row's (a seed or a later edit may be ahead): a
// create or update sets its fields (`null` or no value clears a field, as in
// rtsync's state), a delete marks the record deleted and keeps its fields,
// and a create of a deleted record starts it afresh.
export async function applyBatch(pool, { tableId, events }) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    let applied = 0;
    for (const e of events) {
      const fresh = await client.query(
        "INSERT INTO rtsync_events (table_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [tableId, e.id],
      );
      if (fresh.rowCount === 0) continue; // delivered before
      if (e.entityType !== "record" || typeof e.version !== "number") continue;
      const row = await client.query(
        "SELECT version, deleted FROM records WHERE table_id = $1 AND record_id = $2 FOR UPDATE",
        [tableId, e.entityId],
      );
      const held = row.rows[0];
      if (held && Number(held.version) >= e.version) continue; // not newer
      const deleted = e.type === "delete";
      await client.query(
        `INSERT INTO records (table_id, record_id, version, deleted) VALUES ($1, $2, $3, $4)
         ON CONFLICT (table_id, record_id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted`,
        [tableId, e.entityId, e.version, deleted],
      );
      if (deleted) {
        applied++;
        continue;
      }
      if (e.type === "create" && held?.deleted) {
        await client.query("DELETE FROM field_values WHERE table_id = $1 AND record_id = $2", [tableId, e.entityId]);
      }
      for (const c of e.changes ?? []) {
        if (c.newValue === undefined || c.newValue === null) {
          await client.query(
            "DELETE FROM field_values WHERE table_id = $1 AND record_id = $2 AND field_id = $3",
            [tableId, e.entityId, c.fieldId],
          );
        } else {
          await client.query(
            `INSERT INTO field_values (table_id, record_id, field_id, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (table_id, record_id, field_id) DO UPDATE SET value = EXCLUDED.value`,
            [tableId, e.entityId, c.fieldId, JSON.stringify(c.newValue)],
          );
        }
      }
      applied++;
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

// Applies one batch of a base's events ({"baseId", "events"}: a base
// renamed, its icon changed, ...) the same way: once per event id, and
// only when the base's version is newer; `null` clears an attribute.
export async function applyBaseBatch(pool, { baseId, events }) {
  const client = await pool.connect();
  const stream = `{${baseId}}`;
  try {
    await client.query("BEGIN");
    let applied = 0;
    for (const e of events) {
      const fresh = await client.query(
        "INSERT INTO rtsync_events (table_id, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [stream, e.id],
      );
      if (fresh.rowCount === 0 || e.entityType !== "base" || typeof e.version !== "number") continue;
      const row = await client.query("SELECT version FROM bases WHERE base_id = $1 FOR UPDATE", [baseId]);
      if (row.rows[0] && Number(row.rows[0].version) >= e.version) continue;
      await client.query(
        `INSERT INTO bases (base_id, version) VALUES ($1, $2)
         ON CONFLICT (base_id) DO UPDATE SET version = EXCLUDED.version`,
        [baseId, e.version],
      );
      for (const c of e.changes ?? []) {
        if (c.newValue === undefined || c.newValue === null) {
          await client.query("DELETE FROM base_fields WHERE base_id = $1 AND field_id = $2", [baseId, c.fieldId]);
        } else {
          await client.query(
            `INSERT INTO base_fields (base_id, field_id, value) VALUES ($1, $2, $3)
             ON CONFLICT (base_id, field_id) DO UPDATE SET value = EXCLUDED.value`,
            [baseId, c.fieldId, JSON.stringify(c.newValue)],
          );
        }
      }
      applied++;
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
