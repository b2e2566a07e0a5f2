
--[==[
rtsync_commit: the atomic commit of one change.

Every writer goes through it: the sidecars (WebSocket and HTTP API) and any
other service that wants the version check. One call checks the versions,
writes the entity state, appends the event to the stream (trimming by
retention) and returns the CommitResult, atomically. The whole answer is
decided before the first write, so the function never fails half-way.

FCALL rtsync_commit <numkeys: 5 or 6> <stream> <state> <records> <sink-floor>
                    <doorbell> [<dedup>]
                    <change> <changes> <metadata> [<retentionMs> [<value>...]]
FCALL rtsync_commit <numkeys: 6 or 7> <stream> <state> <records> <sink-floor>
                    <doorbell> <history> [<dedup>] <same ARGV>
      (v1.3: what the sidecar sends for a record; the change's header then
      has "recordHistory", which is how this form is told from the one
      above)
(v1.3: any form may end with <undo> <redo>, the user's stacks, when the
change's header has "undo": true; see KEYS)
FCALL rtsync_commit <numkeys: 2 or 3> <stream> <state> [<dedup>] <same ARGV>
      (the first documented form, kept for compatibility: the other keys
      are derived from the stream's name; see `adapt` at the end)

KEYS (the full form; what the sidecar sends, built by src/store/keys.rs)
  1 stream     `<p>:{T}:events` (or `<p>:{B}:base-events` for entityType "base")
  2 state      records: `<p>:{T}:rec:<recordId>` (hash, see "Record state")
               other entities: `<p>:{T}:ver` (hash: "<entityType>:<entityId>" -> version)
  3 records    the table's record index `<p>:{T}:records` (sorted set,
               score 0; see records.lua), kept by record commits; for a
               base's stream `<p>:{B}:base-records`, which no commit writes
  4 sink floor `<p>:{T}:sink-floor` (`<p>:{B}:base-sink-floor`), read only
  5 doorbell   the sharded channel `<p>:{T}:presence` (`<p>:{B}:base-presence`):
               not a key, declared so the call names everything it touches
  6 dedup      `<p>:{T}:cc:<len(userId)>:<userId>:<clientChangeId>` (the same
               scope prefix as the stream; `len` is the user id's length in
               bytes, so the key is unambiguous). Required when the change has
               a clientChangeId, omitted (numkeys 5; numkeys 2 in the
               compatibility form, where it is KEYS[3]) otherwise. A
               clientChangeId is scoped to its user and table.
  (v1.3, the form whose header has "recordHistory")
  6 history    the record's history index `<p>:{T}:rh:<recordId>` (a list of
               its stream ids, newest first; see "History index"), then
  7 dedup      as 6 above.
  Without "recordHistory" the history index of a record change is derived
  from the stream's name (`<p>:{T}:events` -> `<p>:{T}:rh:<recordId>`, same
  slot), so older callers keep every record's history too.
  (v1.3, optional) undo, redo: the user's undo stack on the table
               `<p>:{T}:undo:<len(userId)>:<userId>` and its redo stack
               `<p>:{T}:redo:<len(userId)>:<userId>` (lua/steps.lua), as
               the last two KEYS of any form above when the header has
               "undo": true. A committed record change is then recorded as
               an undo step (or joins the top one) and the redo stack is
               cleared. The sidecar passes them for changes made by a
               connection's user; the HTTP API does not; a producer may opt
               in the same way.
ARGV
  1 change     JSON object: {"type", "entityType", "entityId", "userId",
               "baseId"?, "tableId"?, "version"?, "clientChangeId"?, "origin"?}
               type: create | update | delete (records); any word for others
               version: the version the change was based on, an integer in
               0..2^53-1; absent = blind write
               maxRecordBytes (v1.2, optional, default 4194304): the most
               bytes the record's state may hold after the change (the sum
               of its field ids and stored values); a change that would
               grow it past this is refused (RTSYNC_TOO_LARGE) and nothing
               is written
               answerBytes (v1.2, optional, default 1048576): the most bytes
               of field values the answer carries (`current`, the
               conflicts' `theirValue`); see "truncated" below
               maxEventBytes (v1.3, optional): the most bytes a stream
               entry's changes and metadata may take (plus 512 for the
               rest), so every subscriber can be sent it; when the old
               values would pass it they are left out (see "Stream entry
               of a record change"). Absent: no bound
               recordHistory (v1.3, optional, default 100): the most ids
               the record's history index keeps, 1..10000
               undo, undoGroup (v1.3, optional): true when the last two
               KEYS are the user's undo and redo stacks (above); the undo
               group the change joins (lua/steps.lua, "Grouping")
               requireVersion (v1.3, optional): the record version a
               row-grant check read (0: no state). When the record's
               version is another one, nothing is written and the answer
               is {"status":"rejected","reason":"moved","version"} (not
               kept for the clientChangeId): the writer reads and checks
               again (docs/protocol.md 2.2)
               hiddenFields / readableFields (v1.2, optional, at most one):
               the field ids the answer's reader may not read, or the only
               ones it may read. Those it may not read are left out of
               `current` and the conflicts' `theirValue`, and out of the
               answer's byte bound, so whether an answer is truncated never
               depends on fields its reader cannot see
  2 changes    JSON array of {"fieldId", "oldValue"?, "newValue"?}, or "" for none.
               (v1.2) Must be array text: "{}" is refused. For a field,
               view, table or base change it is written to the stream
               verbatim. (v1.3) For a record change the stream entry's
               `changes` is built by the function instead (see "Stream
               entry of a record change"); a writer's `oldValue` is
               ignored (dropped, not kept).
  3 metadata   JSON object, or "". Written verbatim. (v1.2) Must be object
               text: "[]" is refused. {"onConflict": "reject"}
               turns a conflicting write into a rejection.
  4 retention  milliseconds of history to keep (default 86400000)
  5.. values   (v1.1, recommended) one argument per entry of `changes`, in
               order: the JSON text of that entry's newValue, exactly as it
               is to be stored and read back, or "" for none (the field's
               value is removed). Without them the values are taken from
               `changes` through Lua's cjson, which keeps numbers only as
               doubles and cannot tell `[]` from `{}`.

A record commit also adds the record id to the table's record index
(KEYS[3]), in the same slot.

Stream entry of a record change (v1.3): `changes` holds, per entry of the
change, in order,
  {"fieldId", "oldValue"?, "oldVersion", "newValue"?}
where oldValue is the field's value the record held before the change (its
stored JSON text, embedded as it is; absent when the field had no value),
oldVersion the field's version before (`v:<fieldId>`, 0 when absent) and
newValue the value written (its JSON text; absent when the value is
removed). These come from the record state, never from the writer. A
delete touches every field: its entry lists every field the record held,
with its oldValue and oldVersion and no newValue. A create on a deleted
record starts from nothing (no oldValue, oldVersion 0). When the entry
with its old values would pass maxEventBytes, every entry's oldValue is left
out and marked "oldValueOmitted": true (oldVersion stays).

History index (v1.3, `<p>:{T}:rh:<recordId>`, a list): the stream ids of the
record's changes, newest first, pushed by the same call that appends the
entry; at most recordHistory ids; ids older than the stream's retention
bound (the MINID the XADD trims by) are dropped from its old end on every
write, and the key expires that long after the record's last change, so a
quiet record's index goes away with its entries. `rtsync_record_history`
(lua/record_history.lua) reads it. A key of another type refuses the
commit before anything is written.

Record state (`<p>:{T}:rec:<recordId>`):
  _v          the record's version (an integer, +1 per commit, at most
              2^53-1: a record at that version refuses further commits)
  _b          (v1.2) the bytes the state holds: the sum of each field's id
              and stored value; computed from the fields when absent
  _del        "1" while the record is deleted
  w:<fieldId> (v1.3) the user id of the field's last writer
  v:<fieldId> the version of the field's last change
  d:<fieldId> the field's value as JSON text, byte for byte as the writer
              gave it (v1.1). Values written by v1 were MessagePack; they are
              still read (a value whose first byte cannot start JSON, or a
              one-byte value other than a digit, is taken as MessagePack).

RETURNS a JSON string, the CommitResult:
  {"status": "applied"|"merged"|"overwritten"|"rejected"|"duplicate",
   "originalStatus"?: the first answer's status (duplicates only),
   "eventId"?: "<stream id>", "version": n,
   "conflicts"?: [{"fieldId", "theirValue"}],
   "current"?: {"version", "fields": {fieldId: value}, "deleted"},
   "reason"?: "exists"|"deleted"|"conflict"|"stale_version"|"version_ahead",
   "truncated"?: true}
The answer's field values are bounded by answerBytes: when the record's
state is larger, `current` holds its version and only the fields the change
touched (as many as fit), and a conflict whose value does not fit has no
`theirValue`; either way the answer says "truncated": true (load the record
for the rest).
A rejected change writes nothing but its dedup key. Every answer to a change
with a clientChangeId (rejections too) is kept for 24 h, as its status,
version, eventId and reason only (never the record's state); a resend
returns it with status "duplicate" and the first status as
"originalStatus", and is never evaluated again. A duplicate of a rejection
carries the record's `current` as it is now.
Errors: RTSYNC_INVALID (bad arguments, or a record at the largest version)
and RTSYNC_TOO_LARGE (the record's state would pass maxRecordBytes). The
RTSYNC_TOO_LARGE message names the bound, never the record's size: the
writer may not be allowed to read every field of it.
A committed change also rings the table's doorbell: SPUBLISH
<p>:{T}:presence '{"event":"ring"}' (KEYS[5]; a base's change: <p>:{B}:base-presence),
so the sidecars serving the table (or base) read its stream at once. (A producer that XADDs directly may ring the same way;
otherwise its entry is read by the sidecars' periodic sweep, within a second.)
Doorbell v1.3: when the entry's fields are all text and add up to at most 4 KiB the ring
carries it: '{"event":"ring","id":"<id>","prev":"<prev>","fields":[name,
value, ...]}', where prev is the stream's last entry before it ('0-0' for
none). A sidecar whose last delivered event of the table is prev delivers
the entry from the ring, without reading the stream; any other sidecar
reads the stream as for a bare ring.

Example (another service updating field f1 of record r1 in table t1):
  FCALL rtsync_commit 5 rts:{t1}:events rts:{t1}:rec:r1 rts:{t1}:records
        rts:{t1}:sink-floor rts:{t1}:presence
        '{"type":"update","entityType":"record","entityId":"r1","userId":"svc-billing","version":4}'
        '[{"fieldId":"f1","newValue":42}]' '' 86400000 '42'
]==]

define('commit', { 'base', 'steps' }, function(m)
local INVALID, TOO_LARGE = m.base.INVALID, m.base.TOO_LARGE
local is_id, is_null, jstr, jint = m.base.is_id, m.base.is_null, m.base.jstr, m.base.jint
local call, register = m.base.call, m.base.register
-- The globals used here, as locals bound at the library's first call
-- (base `bind`: a global is slower to look up).
local function globals()
  return type, tonumber, tostring, pairs, ipairs, unpack, pcall, error, cjson, cmsgpack, table, math
end
local type, tonumber, tostring, pairs, ipairs, unpack, pcall, error, cjson, cmsgpack, table, math
m.base.bind(function()
  type, tonumber, tostring, pairs, ipairs, unpack, pcall, error, cjson, cmsgpack, table, math = globals()
end)

local DEDUP_TTL_SECS = 86400
local DEFAULT_RECORD_HISTORY = 100
-- Room for an event's own fields besides changes and metadata (as
-- src/change/valid.rs counts it).
local EVENT_OVERHEAD = 512
local MAX_RECORD_HISTORY = 10000
local MAX_VERSION = 9007199254740991 -- 2^53-1: exact in a double, and so is +1
local DEFAULT_MAX_RECORD_BYTES = 4194304
local DEFAULT_ANSWER_BYTES = 1048576
local RING = '{"event":"ring"}'
local ENTITY_TYPES = { record = true, field = true, view = true, table = true, base = true }
local RECORD_TYPES = { create = true, update = true, delete = true }

local function fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_commit: ' .. msg)
end

local function too_large(msg)
  return redis.error_reply(TOO_LARGE .. 'rtsync_commit: ' .. msg)
end

local function decode_json(raw, what, want)
  if raw == nil or raw == '' then
    return nil
  end
  -- cjson decodes `[]` and `{}` to the same empty table: tell them apart
  -- by the text.
  local open = raw:match('^%s*([%[{])')
  if (want == 'object' and open ~= '{') or (want == 'array' and open ~= '[') then
    return nil, what .. ' must be a JSON ' .. want
  end
  local ok, value = pcall(cjson.decode, raw)
  if not ok or type(value) ~= 'table' then
    return nil, what .. ' must be a JSON ' .. want
  end
  return value
end

-- cjson decodes arrays and objects both to tables: an array has only the
-- keys 1..n.
local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- Bytes that can start JSON text: [ { " - 0-9 t f n.
local JSON_START = {
  [91] = true, [123] = true, [34] = true, [45] = true, [116] = true, [102] = true, [110] = true,
  [48] = true, [49] = true, [50] = true, [51] = true, [52] = true,
  [53] = true, [54] = true, [55] = true, [56] = true, [57] = true,
}

-- A stored field value as JSON text (see "Record state").
local function value_json(raw)
  if not raw or raw == '' then
    return 'null'
  end
  local b = raw:byte(1)
  if JSON_START[b] and (#raw > 1 or (b >= 48 and b <= 57)) then
    return raw
  end
  local ok, v = pcall(cmsgpack.unpack, raw)
  if ok then
    local ok2, text = pcall(cjson.encode, v)
    if ok2 then return text end
  end
  return 'null'
end

-- The bytes a record's state holds (see "Record state"): `_b`, or the sum
-- over its fields when a commit of an older library wrote the record.
-- `known`, when given, is `_b` as already read (false when absent), so
-- the commit path reads it with the rest of the record's head.
local function state_bytes(state, known)
  if known == nil then known = call('HGET', state, '_b') end
  local b = tonumber(known)
  if b then return b end
  local total = 0
  local flat = call('HGETALL', state)
  for i = 1, #flat, 2 do
    local k = flat[i]
    if k:sub(1, 2) == 'd:' then
      total = total + #k - 2 + #flat[i + 1]
    end
  end
  return total
end

-- (v1.2) Who reads a reply: `{hide = set}` (the fields it may not read)
-- or `{only = set}` (the only fields it may read); nil reads every field.
-- The fields a reader may not read are left out of what it is sent and out
-- of the byte bound its reply is cut by, so where a reply is cut never
-- depends on them.
local function field_set(list, name)
  if is_null(list) then return nil end
  if type(list) ~= 'table' or not is_array(list) then
    return nil, name .. ' must be an array of field ids'
  end
  local set = {}
  for _, f in ipairs(list) do
    if not is_id(f) then return nil, name .. ' must be an array of field ids' end
    set[f] = true
  end
  return set
end

local function readable_by(reader, f)
  if reader == nil then return true end
  if reader.only then return reader.only[f] == true end
  return not reader.hide[f]
end

-- The bytes of a record's state its reader receives (field ids and stored
-- values): the state's size less the fields hidden from it, or the sum of
-- the fields it may read; one HSTRLEN per listed field.
local function visible_bytes(state, reader)
  if reader == nil then return state_bytes(state) end
  local listed = 0
  for f in pairs(reader.only or reader.hide) do
    local len = call('HSTRLEN', state, 'd:' .. f)
    if len > 0 then listed = listed + #f + len end
  end
  if reader.only then return listed end
  return state_bytes(state) - listed
end

-- {"version", "fields", "deleted"} of a record as `reader` may see it, as
-- JSON, and whether fields were left out: the whole state it may read when
-- that fits in `budget` bytes, else only the `touched` fields that fit.
local function record_current(state, version, deleted, touched, budget, reader)
  local parts = {}
  local partial = false
  if visible_bytes(state, reader) <= budget then
    local flat = call('HGETALL', state)
    for i = 1, #flat, 2 do
      local k = flat[i]
      if k:sub(1, 2) == 'd:' and readable_by(reader, k:sub(3)) then
        parts[#parts + 1] = jstr(k:sub(3)) .. ':' .. value_json(flat[i + 1])
      end
    end
  else
    partial = true
    local used, seen = 0, {}
    for _, f in ipairs(touched or {}) do
      if not seen[f] and readable_by(reader, f) then
        seen[f] = true
        local len = call('HSTRLEN', state, 'd:' .. f)
        if len > 0 and used + #f + len <= budget then
          used = used + #f + len
          parts[#parts + 1] = jstr(f) .. ':' .. value_json(call('HGET', state, 'd:' .. f))
        end
      end
    end
  end
  return '{"version":' .. jint(version) .. ',"fields":{' .. table.concat(parts, ',')
    .. '},"deleted":' .. tostring(deleted) .. '}', partial
end

-- What a dedup key keeps of an answer: never the record's state.
local function short_answer(status, id, version, reason)
  local out = '{"status":"' .. status .. '"'
  if id then out = out .. ',"eventId":' .. jstr(id) end
  out = out .. ',"version":' .. jint(version)
  if reason then out = out .. ',"reason":' .. jstr(reason) end
  return out .. '}'
end

-- The answer and the dedup key's form of it.
local function rejected(reason, version, current, truncated)
  local out = '{"status":"rejected","reason":' .. jstr(reason) .. ',"version":' .. jint(version)
    .. ',"current":' .. current
  if truncated then out = out .. ',"truncated":true' end
  return out .. '}', short_answer('rejected', nil, version, reason)
end

local function committed(status, id, version, conflicts, truncated)
  local out = '{"status":"' .. status .. '","eventId":' .. jstr(id) .. ',"version":' .. jint(version)
  if conflicts and #conflicts > 0 then
    out = out .. ',"conflicts":[' .. table.concat(conflicts, ',') .. ']'
  end
  if truncated then out = out .. ',"truncated":true' end
  return out .. '}', short_answer(status, id, version, nil)
end

-- The field ids a change touches.
local function touched_fields(changes)
  local out = {}
  for _, c in ipairs(changes or {}) do
    out[#out + 1] = c.fieldId
  end
  return out
end

-- (v1.3) The record's state before a change: for each field the change
-- touches (a delete: every field the record holds), in order,
-- `prior[fieldId] = {text = <stored value as JSON text, or nil when
-- absent>, version = <v:fieldId, 0 when absent>, len = <the stored
-- value's bytes, for an update>}`, and `prior_order`, the
-- field ids in the order the stream entry lists them. A create on a deleted
-- record starts from nothing (its fields are gone). The fields come from
-- `head.fields` when read_head read them (a commit recording an undo
-- step), else one HMGET per field (a delete: the HGETALL it reads anyway).
-- Taken before anything is written; undo builds on it.
local function prior_state(state, change, changes, deleted, head)
  local prior, order = {}, {}
  if change.type == 'create' and deleted then
    for _, c in ipairs(changes or {}) do
      if not prior[c.fieldId] then
        prior[c.fieldId] = { version = 0 }
        order[#order + 1] = c.fieldId
      end
    end
    return prior, order
  end
  if change.type == 'delete' then
    local flat = call('HGETALL', state)
    for i = 1, #flat, 2 do
      local kind, f = flat[i]:sub(1, 2), flat[i]:sub(3)
      if kind == 'd:' or kind == 'v:' then
        if not prior[f] then
          prior[f] = { version = 0 }
          order[#order + 1] = f
        end
        if kind == 'd:' then prior[f].text = value_json(flat[i + 1]) end
        if kind == 'v:' then prior[f].version = tonumber(flat[i + 1]) or 0 end
      end
    end
    return prior, order
  end
  for _, c in ipairs(changes or {}) do
    local f = c.fieldId
    if not prior[f] then
      local got = head.fields and head.fields[f] or call('HMGET', state, 'd:' .. f, 'v:' .. f)
      local text, len = nil, 0
      if got[1] then text, len = value_json(got[1]), #got[1] end
      prior[f] = { text = text, version = tonumber(got[2]) or 0, len = len }
      order[#order + 1] = f
    end
  end
  return prior, order
end

-- (v1.3) The stream entry's `changes`, built here from the store and the
-- values: per entry {"fieldId", "oldValue"? (the stored JSON text, as it
-- is), "oldVersion", "newValue"? (the value argument's JSON text, as it
-- is)}. A writer's own `oldValue` is not kept: it is never trusted. A
-- delete lists every field the record held, with its old value and no new
-- one. `given` is the writer's text, kept for a change with no entries ("[]"
-- stays "[]", none stays none).
local function build_changes(change, changes, values, prior, order, given, omit_old)
  local parts = {}
  local function entry(f, new_text)
    local p = prior[f] or { version = 0 }
    local out = '{"fieldId":' .. jstr(f)
    if p.text and omit_old then out = out .. ',"oldValueOmitted":true' end
    if p.text and not omit_old then out = out .. ',"oldValue":' .. p.text end
    out = out .. ',"oldVersion":' .. jint(p.version)
    if new_text and new_text ~= '' then out = out .. ',"newValue":' .. new_text end
    parts[#parts + 1] = out .. '}'
  end
  if change.type == 'delete' then
    for _, f in ipairs(order) do entry(f, nil) end
  else
    for i, c in ipairs(changes or {}) do entry(c.fieldId, values[i]) end
  end
  if #parts == 0 then
    if given ~= nil and given ~= '' then return '[]' end
    return ''
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- (v1.3) The entry's `changes` (see build_changes), within `room` bytes
-- when given: an event must fit in one frame for every subscriber
-- (maxEventBytes), and the writer's change was checked without the old
-- values, so when they would not fit they are left out, each marked
-- "oldValueOmitted": true (its oldVersion still says which value it was).
local function stored_changes(change, changes, values, prior, order, given, room)
  local text = build_changes(change, changes, values, prior, order, given, false)
  if room ~= nil and #text > room then
    return build_changes(change, changes, values, prior, order, given, true)
  end
  return text
end

-- XADD (trimming by retention) and the doorbell. The first write of every
-- commit: the only one Redis could refuse (a key of the wrong type), so a
-- refusal leaves nothing written.
-- Whether a doorbell can carry the entry's `fields` (the XADD's field
-- list): all text and at most RING_ENTRY_BYTES in all (a number is stored
-- as Redis turns it into text: the sidecars read it back). Checked in
-- place: the ring carries the same table the XADD was given.
local RING_ENTRY_BYTES = 4096
local function carriable(fields)
  local size = 0
  for i = 1, #fields do
    local v = fields[i]
    if type(v) ~= 'string' then
      return false
    end
    size = size + #v
    if size > RING_ENTRY_BYTES then
      return false
    end
  end
  return true
end

local function append(keys, change, version, changes_raw, metadata_raw, retention_ms)
  local t = call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local min_id = now_ms - retention_ms
  if min_id < 0 then min_id = 0 end
  -- Retention waits for the sink (docs/protocol.md section 9): `rtsync sink`
  -- keeps the stream's sink floor (KEYS[4]) at the time (ms) of the oldest
  -- entry it has not acknowledged, but never older than
  -- RTS_SINK_MAX_LAG_SECS, and the key expires after that long, so a gone
  -- sink holds nothing back for ever.
  if keys[4] then
    local floor = tonumber(call('GET', keys[4]) or '')
    if floor ~= nil and floor < min_id then
      min_id = floor
    end
  end
  local fields = { 'type', change.type, 'entityType', change.entityType,
    'entityId', change.entityId, 'userId', change.userId,
    'version', jint(version) }
  local function opt(name, value)
    if value ~= nil and value ~= '' and value ~= cjson.null then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  opt('baseId', change.baseId)
  opt('tableId', change.tableId)
  opt('changes', changes_raw)
  opt('metadata', metadata_raw)
  opt('origin', change.origin)
  opt('clientChangeId', change.clientChangeId)
  -- A small entry travels in its doorbell with the stream's last entry
  -- before it, so a sidecar whose last delivered event is that entry
  -- delivers this one without reading it back. Reading that id copies the
  -- previous entry too: bounded by the request that wrote it, and only
  -- when this one is small.
  local carried = keys[5] and carriable(fields)
  local prev
  if carried then
    local last = call('XREVRANGE', keys[1], '+', '-', 'COUNT', 1)
    prev = (last[1] and last[1][1]) or '0-0'
  end
  local id = call('XADD', keys[1], 'MINID', '~', jint(min_id), '*', unpack(fields))
  -- Doorbell (KEYS[5]): sidecars serving the table (or base) read its
  -- stream when it rings.
  if carried then
    call('SPUBLISH', keys[5], cjson.encode({ event = 'ring', id = id, prev = prev, fields = fields }))
  elseif keys[5] then
    call('SPUBLISH', keys[5], RING)
  end
  return id, min_id, now_ms
end

-- The time part (ms) of a stream id.
local function id_ms(id)
  return tonumber(id:match('^(%d+)')) or 0
end

-- (v1.3) Appends the new entry's id to the record's history index (KEYS[7],
-- a list of stream ids, newest first): at most `cap` ids, none older than
-- what the stream's retention keeps (`min_id`, ms: the bound the XADD
-- trimmed by), expiring `ttl_ms` after the record's last change. `oldest`
-- is the index's last id before the push (read before the first write,
-- see commit_record), and `next_oldest` the one before it (false when the
-- index held only `oldest`; nil when not read): a full index then drops
-- its oldest id with one RPOP instead of LTRIM and LINDEX. Its cost follows
-- the record's own changes: three commands (a full index: the RPOP too),
-- and one RPOP per id dropped for its age (each id is dropped at most once).
local function index_append(index, id, cap, min_id, ttl_ms, oldest, next_oldest)
  local len = call('LPUSH', index, id)
  if len == cap + 1 and oldest and next_oldest ~= nil then
    call('RPOP', index)
    oldest = next_oldest or id
  elseif len > cap then
    call('LTRIM', index, 0, cap - 1)
    oldest = call('LINDEX', index, -1)
  end
  while oldest and id_ms(oldest) < min_id do
    call('RPOP', index)
    oldest = call('LINDEX', index, -1)
  end
  call('PEXPIRE', index, ttl_ms)
end

-- The state's size after `changes` (with `values`), from `cur_b`; a
-- create on a deleted record starts from nothing. The stored values'
-- sizes come from `prior` (read once, see prior_state).
local function bytes_after(state, cur_b, changes, values, prior)
  local lens, new_b = {}, cur_b
  for i, c in ipairs(changes or {}) do
    local f = c.fieldId
    local old = lens[f]
    if old == nil then
      old = 0
      local known = prior[f] and prior[f].len
      if cur_b > 0 then old = known or call('HSTRLEN', state, 'd:' .. f) end
    end
    if old > 0 then new_b = new_b - #f - old end
    local len = #values[i]
    if len > 0 then new_b = new_b + #f + len end
    lens[f] = len
  end
  return new_b
end

-- The fields a stale change (based on `base`) touched that changed since:
-- the conflicts as JSON, within `budget` bytes of values, and whether some
-- values were left out. A delete touches every field. A field the answer's
-- reader may not read is listed without its value and takes none of the
-- budget. A readable field whose stored JSON text is byte-equal to the
-- text this change writes (`values`; '' for null) is no conflict (v1.3):
-- both writers agree. A hidden field keeps its conflict, so the answer is
-- no oracle for a value the writer may not read.
local function find_conflicts(state, change, changes, base, budget, values)
  local same = {}
  for i, c in ipairs(change.type == 'delete' and {} or changes or {}) do
    if readable_by(change.reader, c.fieldId) then
      local stored = call('HGET', state, 'd:' .. c.fieldId)
      same[c.fieldId] = same[c.fieldId] ~= false and (stored or '') == values[i]
    end
  end
  local touched = {}
  if change.type == 'delete' then
    local flat = call('HGETALL', state)
    for i = 1, #flat, 2 do
      if flat[i]:sub(1, 2) == 'v:' then
        touched[#touched + 1] = flat[i]:sub(3)
      end
    end
  else
    for _, c in ipairs(changes or {}) do
      if not same[c.fieldId] then touched[#touched + 1] = c.fieldId end
    end
  end
  local conflicts, used, truncated = {}, 0, false
  for _, f in ipairs(touched) do
    local fv = tonumber(call('HGET', state, 'v:' .. f)) or 0
    if fv > base and not readable_by(change.reader, f) then
      conflicts[#conflicts + 1] = '{"fieldId":' .. jstr(f) .. '}'
    elseif fv > base then
      local len = call('HSTRLEN', state, 'd:' .. f)
      if used + #f + len <= budget then
        used = used + #f + len
        local their = value_json(call('HGET', state, 'd:' .. f))
        conflicts[#conflicts + 1] = '{"fieldId":' .. jstr(f) .. ',"theirValue":' .. their .. '}'
      else
        truncated = true
        conflicts[#conflicts + 1] = '{"fieldId":' .. jstr(f) .. '}'
      end
    end
  end
  return conflicts, truncated
end

-- The state's size after the change, or nil and the error when it would
-- grow past maxRecordBytes (a change that shrinks an oversized state, e.g.
-- under an older bound, is not refused). A delete keeps no size. The error
-- names the bound only: the state's size counts fields the writer may not
-- be allowed to read.
local function checked_size(state, change, deleted, changes, values, prior, known_b)
  if change.type == 'delete' then return 0 end
  local cur_b = 0
  if not (change.type == 'create' and deleted) then
    cur_b = state_bytes(state, known_b)
  end
  local new_b = bytes_after(state, cur_b, changes, values, prior)
  if new_b > change.maxRecordBytes and new_b > cur_b then
    return nil, too_large('record ' .. change.entityId .. ' would exceed the '
      .. jint(change.maxRecordBytes) .. ' bytes a record may hold (maxRecordBytes; RTS_MAX_RECORD_BYTES)')
  end
  return new_b
end

-- Writes the record's new state at version `new_v` (its size `new_b`).
local function write_record(state, change, changes, values, deleted, new_v, new_b)
  if change.type == 'create' and deleted then
    call('DEL', state)
  end
  local writes = { 'HSET', state, '_v', jint(new_v) }
  local removed = {}
  if change.type == 'delete' then
    writes[#writes + 1] = '_del'
    writes[#writes + 1] = '1'
  else
    writes[#writes + 1] = '_b'
    writes[#writes + 1] = jint(new_b)
    for i, c in ipairs(changes or {}) do
      writes[#writes + 1] = 'v:' .. c.fieldId
      writes[#writes + 1] = jint(new_v)
      -- (v1.3) who wrote it: the `by` of an undo's skipped field.
      writes[#writes + 1] = 'w:' .. c.fieldId
      writes[#writes + 1] = change.userId
      if values[i] == '' then
        removed[#removed + 1] = 'd:' .. c.fieldId
      else
        writes[#writes + 1] = 'd:' .. c.fieldId
        writes[#writes + 1] = values[i]
      end
    end
  end
  call(unpack(writes))
  if change.type == 'create' then
    removed[#removed + 1] = '_del'
  end
  if #removed > 0 then
    call('HDEL', state, unpack(removed))
  end
end

-- HMGET's arguments per call at most: Lua's unpack is bounded by its C
-- stack (about 8000 values).
local HMGET_CHUNK = 3000

-- The record's head and, for a create or update, each touched field's
-- stored text, version and origin marker, in one HMGET (chunked only for a
-- change of thousands of fields): `{v, del, b, u, fields = {[fieldId] =
-- {d:, v:, u:}}}`. Everything the commit path reads of the record before
-- writing, read once: the version check, the state's size (`_b`), the old
-- values (prior_state) and the undo step's origins (steps.prior). The
-- origin markers (`_u`, `u:<f>`) only when `origins` (an undo step is
-- recorded); otherwise they read as absent.
local function read_head(state, change, changes, origins)
  local names, at = { '_v', '_del', '_b', origins and '_u' or '_v' }, {}
  if change.type ~= 'delete' then
    for _, c in ipairs(changes or {}) do
      local f = c.fieldId
      if at[f] == nil then
        at[f] = #names + 1
        names[#names + 1] = 'd:' .. f
        names[#names + 1] = 'v:' .. f
        if origins then names[#names + 1] = 'u:' .. f end
      end
    end
  end
  local got
  if #names <= HMGET_CHUNK then
    got = call('HMGET', state, unpack(names))
  else
    got = {}
    for from = 1, #names, HMGET_CHUNK do
      local part = call('HMGET', state, unpack(names, from, math.min(from + HMGET_CHUNK - 1, #names)))
      for i = 1, #part do got[from + i - 1] = part[i] end
    end
  end
  local fields = {}
  for f, i in pairs(at) do
    fields[f] = { got[i], got[i + 1], origins and got[i + 2] or false }
  end
  return { v = got[1], del = got[2], b = got[3] or false, u = origins and got[4] or false, fields = fields }
end

local function commit_record(keys, change, changes, values, metadata, changes_raw, metadata_raw, retention_ms)
  local state = keys[2]
  -- With an undo step to record, one HMGET for everything (read_head);
  -- without, the head only (measured cheaper: the old values are read per
  -- field, as few as the change has).
  local head
  if keys[8] then
    head = read_head(state, change, changes, true)
  else
    local h = call('HMGET', state, '_v', '_del')
    head = { v = h[1], del = h[2] }
  end
  local cur_v = tonumber(head.v) or 0
  local deleted = head.del == '1'
  local exists = cur_v > 0 and not deleted
  local budget = change.answerBytes
  local function reject(reason)
    local touched = touched_fields(changes)
    local current, partial = record_current(state, cur_v, deleted, touched, budget, change.reader)
    return rejected(reason, cur_v, current, partial)
  end

  if change.requireVersion ~= nil and change.requireVersion ~= cur_v then
    return short_answer('rejected', nil, cur_v, 'moved'), nil
  end
  if change.type == 'create' and exists then
    return reject('exists')
  end
  if change.type ~= 'create' and deleted then
    return reject('deleted')
  end
  if cur_v >= MAX_VERSION then
    return fail('record ' .. change.entityId .. ' is at the largest version (2^53-1) and takes no more commits')
  end

  local base = change.version
  local status, conflicts, truncated = 'applied', {}, false
  if base ~= nil and base > cur_v then
    return reject('version_ahead')
  end
  if base ~= nil and base < cur_v then
    conflicts, truncated = find_conflicts(state, change, changes, base, budget, values)
    if #conflicts == 0 then
      status = 'merged'
    elseif metadata ~= nil and metadata.onConflict == 'reject' then
      return reject('conflict')
    else
      status = 'overwritten'
    end
  end
  local prior, order = prior_state(state, change, changes, deleted, head)
  local new_b, too_big = checked_size(state, change, deleted, changes, values, prior, head.b)
  if new_b == nil then return too_big end

  -- Decided. From here on only writes, the first of which (XADD) is the
  -- only one that could be refused.
  local room = nil
  if change.maxEventBytes then room = change.maxEventBytes - EVENT_OVERHEAD - #(metadata_raw or '') end
  local stored = stored_changes(change, changes, values, prior, order, changes_raw, room)
  -- The history index's two oldest ids, read before the first write:
  -- LRANGE also refuses a key that is not a list, so such a key writes
  -- nothing.
  local tail = keys[7] and call('LRANGE', keys[7], -2, -1)
  local new_v = cur_v + 1
  -- (v1.3) The undo step's old values, from the head read above.
  local before = keys[8] and m.steps.prior(state, change, changes, head)
  local id, min_id, now_ms = append(keys, change, new_v, stored, metadata_raw, retention_ms)
  if keys[7] then
    index_append(keys[7], id, change.recordHistory, min_id, math.max(now_ms - min_id, 1),
      tail[#tail], tail[#tail - 1] or false)
  end
  -- The record index for load_records (v1.1), in the table's slot.
  if keys[3] then
    call('ZADD', keys[3], 0, change.entityId)
  end
  write_record(state, change, changes, values, deleted, new_v, new_b)
  if keys[8] then
    m.steps.record(keys[8], keys[9], change, new_v, before, changes, id, retention_ms, now_ms)
  end
  return committed(status, id, new_v, conflicts, truncated)
end

local function commit_entity(keys, change, changes_raw, metadata_raw, retention_ms)
  local state = keys[2]
  local field = change.entityType .. ':' .. change.entityId
  local cur_v = tonumber(call('HGET', state, field)) or 0
  if change.version ~= nil and change.version ~= cur_v then
    return rejected('stale_version', cur_v, '{"version":' .. jint(cur_v) .. ',"fields":{}}')
  end
  if cur_v >= MAX_VERSION then
    return fail(field .. ' is at the largest version (2^53-1) and takes no more commits')
  end
  local new_v = cur_v + 1
  local id = append(keys, change, new_v, changes_raw, metadata_raw, retention_ms)
  call('HSET', state, field, jint(new_v))
  return committed('applied', id, new_v, nil, false)
end

-- The first answer to a clientChangeId, as a duplicate.
local function as_duplicate(first)
  local status, rest = first:match('^{"status":"(%a+)"(.*)$')
  if status then
    return '{"status":"duplicate","originalStatus":"' .. status .. '"' .. rest
  end
  -- Kept by an older version of this library, encoded by cjson.
  local ok, result = pcall(cjson.decode, first)
  if not ok or type(result) ~= 'table' then
    return '{"status":"duplicate","version":0}'
  end
  result.originalStatus = result.status
  result.status = 'duplicate'
  return cjson.encode(result)
end

-- The JSON text of each change's new value ("" for none): ARGV 5.. when
-- given, else re-encoded from `changes` (lossy; see the header).
local function change_values(changes, args)
  local n = #(changes or {})
  local values = {}
  if #args > 4 then
    if #args - 4 ~= n then
      return nil, 'expects one value argument per entry of changes (' .. n .. '), got ' .. (#args - 4)
    end
    for i = 1, n do
      local raw = args[4 + i]
      if raw ~= '' then
        local ok, v = pcall(cjson.decode, raw)
        if not ok or (type(v) == 'number' and (v ~= v or v == math.huge or v == -math.huge)) then
          return nil, 'value ' .. i .. ' must be JSON text'
        end
        if v == cjson.null then raw = '' end
      end
      values[i] = raw
    end
    return values
  end
  for i, c in ipairs(changes or {}) do
    if is_null(c.newValue) then
      values[i] = ''
    else
      local ok, text = pcall(cjson.encode, c.newValue)
      if not ok then
        return nil, 'changes[' .. (i - 1) .. '].newValue cannot be stored from JSON; pass the values as arguments'
      end
      values[i] = text
    end
  end
  return values
end

-- A clientChangeId needs the dedup key (KEYS[6]); none needs none. The
-- key must name the change's user and clientChangeId: `form.dedup_name`
-- (the compatibility form) gives its whole name, else its end is checked.
local function check_dedup_key(keys, change, form)
  local cc, at = change.clientChangeId, form.dedup_at
  if is_null(cc) then
    change.clientChangeId = nil
    if keys[6] then
      return fail('the dedup key is given but the change has no clientChangeId')
    end
    return nil
  end
  if type(cc) ~= 'string' or #cc < 1 or #cc > 128 then
    return fail('clientChangeId must be a string of 1..128 bytes')
  end
  if not keys[6] then
    return fail('a change with a clientChangeId needs the dedup key as KEYS[' .. at .. ']')
  end
  local tail = ':cc:' .. #change.userId .. ':' .. change.userId .. ':' .. cc
  if form.dedup_name then
    local want, known = form.dedup_name(tail)
    if not known or keys[6] ~= want then
      return fail('the dedup key must be ' .. want)
    end
  elseif keys[6]:sub(-#tail) ~= tail then
    return fail('the dedup key must end with ' .. tail)
  end
  return nil
end

-- (v1.3) recordHistory: the history index's cap, an integer in
-- 1..MAX_RECORD_HISTORY (default DEFAULT_RECORD_HISTORY). A given index
-- (KEYS[6] of the form with recordHistory) must be the record's,
-- `...:rh:<entityId>`.
local function check_history(keys, change, form)
  local cap = change.recordHistory
  if is_null(cap) then
    change.recordHistory = DEFAULT_RECORD_HISTORY
  elseif type(cap) ~= 'number' or cap < 1 or cap > MAX_RECORD_HISTORY or cap ~= math.floor(cap) then
    return fail('recordHistory must be an integer in 1..' .. MAX_RECORD_HISTORY)
  end
  if change.entityType ~= 'record' then
    keys[7] = false
    return nil
  end
  local tail = ':rh:' .. change.entityId
  if form.index_given and keys[7]:sub(-#tail) ~= tail then
    return fail('the history index must end with ' .. tail)
  end
  return nil
end

-- The change header's rules and the keys it needs; nil, or the error.
local function check_change(keys, change, form)
  if not ENTITY_TYPES[change.entityType] then
    return fail('entityType must be record, field, view, table or base')
  end
  if type(change.type) ~= 'string' or #change.type == 0 or #change.type > 32 then
    return fail('type must be a non-empty string')
  end
  if change.entityType == 'record' and not RECORD_TYPES[change.type] then
    return fail('type must be create, update or delete for records')
  end
  if not is_id(change.entityId) then
    return fail('entityId must be an id of 1..128 bytes without control or format characters or braces')
  end
  if not is_id(change.userId) then
    return fail('userId must be an id of 1..128 bytes without control or format characters or braces')
  end
  for _, name in ipairs({ 'baseId', 'tableId', 'origin' }) do
    local v = change[name]
    if not is_null(v) and not is_id(v) then
      return fail(name .. ' must be an id')
    end
    if v == cjson.null then change[name] = nil end
  end
  local v = change.version
  if is_null(v) then
    change.version = nil
  elseif type(v) ~= 'number' or v ~= v or v < 0 or v > MAX_VERSION or v ~= math.floor(v) then
    return fail('version must be a non-negative integer')
  end
  for _, limit in ipairs({ { 'maxRecordBytes', DEFAULT_MAX_RECORD_BYTES }, { 'answerBytes', DEFAULT_ANSWER_BYTES } }) do
    local n = change[limit[1]]
    if is_null(n) then
      change[limit[1]] = limit[2]
    elseif type(n) ~= 'number' or n < 0 or n ~= math.floor(n) then
      return fail(limit[1] .. ' must be a non-negative integer')
    end
  end
  local hide, herr = field_set(change.hiddenFields, 'hiddenFields')
  if herr then return fail(herr) end
  local only, oerr = field_set(change.readableFields, 'readableFields')
  if oerr then return fail(oerr) end
  if hide and only then
    return fail('hiddenFields and readableFields cannot both be given')
  end
  if hide then change.reader = { hide = hide } end
  if only then change.reader = { only = only } end
  local me = change.maxEventBytes
  if is_null(me) then
    change.maxEventBytes = nil
  elseif type(me) ~= 'number' or me < 0 or me ~= math.floor(me) then
    return fail('maxEventBytes must be a non-negative integer')
  end
  local rv = change.requireVersion
  if is_null(rv) then
    change.requireVersion = nil
  elseif type(rv) ~= 'number' or rv < 0 or rv > MAX_VERSION or rv ~= math.floor(rv) then
    return fail('requireVersion must be a non-negative integer')
  end
  local ierr = check_history(keys, change, form)
  if ierr then return ierr end
  return check_dedup_key(keys, change, form)
end

-- ARGV 2.. decoded and checked: changes, metadata, retention, values; or
-- nil and the error.
local function decode_args(args)
  local changes, cerr = decode_json(args[2], 'changes', 'array')
  if cerr then return nil, fail(cerr) end
  if changes ~= nil and not is_array(changes) then
    return nil, fail('changes must be a JSON array')
  end
  for i, c in ipairs(changes or {}) do
    if type(c) ~= 'table' or not is_id(c.fieldId) then
      return nil, fail('changes[' .. (i - 1) .. '].fieldId must be an id')
    end
  end
  local metadata, merr = decode_json(args[3], 'metadata', 'object')
  if merr then return nil, fail(merr) end
  if metadata ~= nil and #metadata > 0 then
    return nil, fail('metadata must be a JSON object')
  end
  local retention_ms = tonumber(args[4] or '86400000')
  if retention_ms == nil or retention_ms <= 0 then
    return nil, fail('retentionMs must be a positive number')
  end
  local values, verr = change_values(changes, args)
  if values == nil then return nil, fail(verr) end
  return { changes = changes, metadata = metadata, retention_ms = retention_ms, values = values }
end

-- The first answer to this clientChangeId, as a duplicate, if there was
-- one. A rejection again carries the record as it is now, so the client
-- rolls back to it.
local function resent_answer(keys, change, changes)
  local first = call('GET', keys[6])
  if not first then return nil end
  local dup = as_duplicate(first)
  if change.entityType == 'record' and dup:find('"originalStatus":"rejected"', 1, true)
      and not dup:find('"current":', 1, true) then
    local head = call('HMGET', keys[2], '_v', '_del')
    local current, partial = record_current(keys[2], tonumber(head[1]) or 0, head[2] == '1',
      touched_fields(changes), change.answerBytes, change.reader)
    dup = dup:sub(1, -2) .. ',"current":' .. current
    if partial then dup = dup .. ',"truncated":true' end
    dup = dup .. '}'
  end
  return dup
end

-- The core: `keys` is the full list (see "KEYS"), `form` what the adapter
-- knows of the call's form.
local function commit(keys, args, form)
  if #args < 3 then
    return fail('expects arguments: change, changes, metadata[, retentionMs[, values...]]')
  end
  local change, err = form.change, nil
  if change == nil then
    change, err = decode_json(args[1], 'change', 'object')
  end
  if change == nil then
    return fail(err or 'change is required')
  end
  local bad = check_change(keys, change, form)
  if bad then return bad end
  local a, aerr = decode_args(args)
  if a == nil then return aerr end

  local cc = change.clientChangeId
  if cc ~= nil then
    local dup = resent_answer(keys, change, a.changes)
    if dup then return dup end
  end
  local result, short
  if change.entityType == 'record' then
    result, short = commit_record(keys, change, a.changes, a.values, a.metadata, args[2], args[3], a.retention_ms)
  else
    result, short = commit_entity(keys, change, args[2], args[3], a.retention_ms)
  end
  if type(result) ~= 'string' then
    return result -- an error reply: nothing was written
  end
  if cc ~= nil and short ~= nil then
    call('SET', keys[6], short, 'EX', DEDUP_TTL_SECS)
  end
  return result
end

-- (v1.3) The record's history index derived from the stream's name:
-- `<p>:{T}:rh:<entityId>` for a record change to `<p>:{T}:events`; none
-- (false) otherwise, or when the change cannot be read (the core then
-- refuses it).
local function derived_index(stream, change)
  if type(change) ~= 'table' or change.entityType ~= 'record' or not is_id(change.entityId) then
    return false
  end
  if stream:match(':base%-events$') then return false end
  local scope = stream:match('^(.*):events$')
  if not scope then return false end
  return scope .. ':rh:' .. change.entityId
end

-- The adapter: every form becomes the full list the core works on,
-- { stream, state, records, sink floor, doorbell, dedup or false,
--   history index or false[, undo stack, redo stack] }.
--
-- (v1.3) A change whose header has `recordHistory` comes with the full
-- form plus its history index: 6 or 7 KEYS, stream, state, records, sink
-- floor, doorbell, history index[, dedup]. Without it, the index is derived
-- from the stream's name (see `derived_index`).
--
-- The compatibility form of 2 or 3 KEYS (stream, state[, dedup]) names the
-- stream and the state only: the record index, the sink floor and the
-- doorbell are derived from the stream's name as `<p>:{T}:events`
-- (`<p>:{T}:records`, `<p>:{T}:sink-floor`, `<p>:{T}:presence`) or
-- `<p>:{B}:base-events` (no index, `<p>:{B}:base-sink-floor`,
-- `<p>:{B}:base-presence`), all in the stream's slot; a stream named
-- otherwise has none of them (false). The full form (5 or 6 KEYS) is passed
-- through as it is. The decoded header goes to the core with the form, so
-- it is decoded once.
local function adapt_form(keys, change)
  if type(change) == 'table' and not is_null(change.recordHistory) then
    if #keys ~= 6 and #keys ~= 7 then
      return nil, fail('with recordHistory, expects 6 or 7 keys: stream, state, records, sink floor, doorbell, history index[, dedup]')
    end
    return { keys[1], keys[2], keys[3], keys[4], keys[5], keys[7] or false, keys[6] }, nil,
      { dedup_at = 7, change = change, index_given = true }
  end
  if #keys == 5 or #keys == 6 then
    return { keys[1], keys[2], keys[3], keys[4], keys[5], keys[6] or false, derived_index(keys[1], change) }, nil,
      { dedup_at = 6, change = change }
  end
  if #keys ~= 2 and #keys ~= 3 then
    return nil, fail('expects 2 or 3 keys: stream, state[, dedup] (or 5 or 6 in the full form: stream, state, records, sink floor, doorbell[, dedup])')
  end
  local scope, kind = keys[1]:match('^(.*):(base%-events)$')
  if not scope then scope, kind = keys[1]:match('^(.*):(events)$') end
  local extra = kind == 'base-events' and 'base-' or ''
  local full = { keys[1], keys[2], false, false, false, keys[3] or false, derived_index(keys[1], change) }
  if scope then
    if kind == 'events' then full[3] = scope .. ':records' end
    full[4] = scope .. ':' .. extra .. 'sink-floor'
    full[5] = scope .. ':' .. extra .. 'presence'
  end
  local function dedup_name(tail)
    return (scope or '') .. tail, scope ~= nil
  end
  return full, nil, { dedup_at = 3, dedup_name = dedup_name, change = change }
end

-- (v1.3) A header with "undo": true ends any form with the user's undo
-- and redo stacks: they become the full list's 8th and 9th keys.
local function adapt(keys, args)
  local change = decode_json(args[1], 'change', 'object')
  local stacks
  if type(change) == 'table' and change.undo == true then
    if #keys < 4 then
      return nil, fail('with undo, the last two keys must be the undo and redo stacks')
    end
    stacks = { keys[#keys - 1], keys[#keys] }
    local rest = {}
    for i = 1, #keys - 2 do rest[i] = keys[i] end
    keys = rest
  end
  local full, err, form = adapt_form(keys, change)
  if full and stacks then
    full[8], full[9] = stacks[1], stacks[2]
  end
  return full, err, form
end

register('rtsync_commit', commit, { adapt = adapt })

return {
  is_array = is_array, value_json = value_json, readable_by = readable_by,
  visible_bytes = visible_bytes, field_set = field_set, append = append,
  state_bytes = state_bytes, decode_json = decode_json, index_append = index_append,
}
end)
