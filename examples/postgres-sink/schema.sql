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
-- Base-level attributes (a base's name, icon, ...), from base events: the
-- base's version and one row per attribute.
CREATE TABLE IF NOT EXISTS bases (
  base_id text   PRIMARY KEY,
  version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS base_fields (
  base_id  text  NOT NULL,
  field_id text  NOT NULL,
  value    jsonb NOT NULL,
  PRIMARY KEY (base_id, field_id)
);
-- `table_id` is the table's id, or `{<baseId>}` for a base's stream (ids
-- never hold braces), so both streams' event ids live side by side.
CREATE TABLE IF NOT EXISTS rtsync_events (
  event_id    text NOT NULL,
  table_id    text NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_id, event_id)
);
