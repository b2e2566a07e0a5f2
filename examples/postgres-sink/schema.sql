-- The app's own tables, as a spreadsheet app's backend might keep them:
-- one row per record (its version and whether it is deleted) and one row
-- per field value. `rtsync_events` remembers every event id applied, so an
-- event the sink delivers twice (at least once) is applied once.
CREATE TABLE IF NOT EXISTS records (
  table_id  text    NOT NULL,
  record_id text    NOT NULL,
  version   bigint  NOT NULL,
  deleted   boolean NOT NULL DEFAULT false,
  PRIMARY KEY (table_id, record_id)
);
CREATE TABLE IF NOT EXISTS field_values (
  table_id  text   NOT NULL,
  record_id text   NOT NULL,
  field_id  text   NOT NULL,
  value     jsonb  NOT NULL,
  PRIMARY KEY (table_id, record_id, field_id)
);
CREATE TABLE IF NOT EXISTS rtsync_events (
  event_id    text NOT NULL,
  table_id    text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_id, event_id)
);
