
--[==[
The table's state with versions (v1.1): the record index, pages of record
states for `load_records`, and seeding from the app's database.

`<p>:{T}:records` (sorted set, every score 0, so members sort by id) holds
the id of every record rtsync_commit or rtsync_seed wrote (deleted ones too:
a client must learn of a deletion). The record hashes are
`<p>:{T}:rec:<recordId>` (see commit.lua); the functions derive their names
from KEYS[1], in the same cluster slot.

rtsync_load  (read-only)
  FCALL rtsync_load 2 <p>:{T}:events <p>:{T}:records [bytes <max>] [hide|only <n> <fieldId>*n]
        page <after> <limit>
  FCALL rtsync_load 2 <p>:{T}:events <p>:{T}:records [bytes <max>] [hide|only <n> <fieldId>*n]
        ids <recordId>...
  -> JSON {"records": [{"recordId", "version", "deleted", "fields": {...}}],
           "next"?: "<recordId>", "remaining"?: ["<recordId>"...],
           "asOf": "<stream id>"}
  A page lists records in id order after <after> ("" for the first page),
  at most <limit>; "next" is set when more may follow (pass it as <after>).
  With ids, the records that exist, in the order given, each once (repeated
  ids are read once). Field values are the stored JSON text, unchanged.
  asOf is the id of the table's last stream event at the time of the read
  ("0-0" for none): every event after it is newer than the states returned.
  (v1.2) The reply holds at most <max> bytes of record states (default
  1048576), and always at least one record: reading stops before the record
  that would pass it. A page then ends early with "next"; a list of ids
  names the ids not read in "remaining" (ask for them again).
  (v1.2) `hide` names the fields the reader may not read, `only` the only
  ones it may read: the others are left out of the states, and out of the
  byte bound (a record counts the bytes of the fields its reader receives),
  so where a page is cut never depends on fields hidden from its reader.

rtsync_seed
  FCALL rtsync_seed 2 <p>:{T}:events <p>:{T}:records
        (<recordId> <version> <deleted 0|1> <nfields> (<fieldId> <value-json>)*nfields)...
  Writes each record only when <version> (1..2^53-1) is greater than the
  version held (a seed never overwrites a newer edit): the record's state is
  replaced by the given fields, each field's version set to <version>.
  Appends no event. The sidecar's seed route checks the size bounds
  (RTS_MAX_RECORD_BYTES for a record, the event size for a field) first.
  -> JSON {"written": n, "skipped": n}
]==]

local MAX_SEED_VERSION = 9007199254740991 -- 2^53-1, as rtsync_commit
local DEFAULT_PAGE_BYTES = 1048576

local function records_fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_records: ' .. msg)
end

-- `<p>:{T}` when KEYS are `<p>:{T}:events` and `<p>:{T}:records`.
local function table_scope(keys)
  local scope = #keys == 2 and keys[1]:match('^(.*):events$')
  if scope and keys[2] == scope .. ':records' then
    return scope
  end
  return nil
end

-- `"fieldId":` for a hash key `d:<fieldId>`, memoized per call: a page
-- repeats the same few field names hundreds of times.
local function field_key_json(memo, k)
  local out = memo[k]
  if out == nil then
    out = jstr(k:sub(3)) .. ':'
    memo[k] = out
  end
  return out
end

-- Appends a record's state as JSON to `out` (pieces, concatenated once
-- per page), without the fields `reader` may not read; false when the
-- record has no state.
local function append_state(out, rec_key, record_id, memo, reader)
  local flat = redis.call('HGETALL', rec_key)
  if #flat == 0 then
    return false
  end
  local version, deleted = '0', 'false'
  local n = #out
  out[n + 1] = '{"recordId":'
  out[n + 2] = jstr(record_id)
  out[n + 3] = ',"fields":{'
  n = n + 3
  local first = true
  for i = 1, #flat, 2 do
    local k = flat[i]
    local b1, b2 = k:byte(1, 2)
    if b1 == 100 and b2 == 58 then -- "d:"
      if reader == nil or readable_by(reader, k:sub(3)) then
        if not first then
          n = n + 1
          out[n] = ','
        end
        first = false
        out[n + 1] = field_key_json(memo, k)
        out[n + 2] = value_json(flat[i + 1])
        n = n + 2
      end
    elseif k == '_v' then
      version = jint(tonumber(flat[i + 1]) or 0)
    elseif k == '_del' and flat[i + 1] == '1' then
      deleted = 'true'
    end
  end
  out[n + 1] = '},"version":'
  out[n + 2] = version
  out[n + 3] = ',"deleted":'
  out[n + 4] = deleted
  out[n + 5] = '}'
  return true
end

local KEYS_ERROR = 'expects 2 keys: <p>:{T}:events and <p>:{T}:records'

local function load(keys, argv)
  local scope = table_scope(keys)
  if scope == nil then return records_fail(KEYS_ERROR) end
  local args, max_bytes = argv, DEFAULT_PAGE_BYTES
  if argv[1] == 'bytes' then
    max_bytes = tonumber(argv[2] or '')
    if max_bytes == nil or max_bytes < 1 or max_bytes ~= math.floor(max_bytes) then
      return records_fail('bytes must be a positive integer')
    end
    args = {}
    for i = 3, #argv do args[#args + 1] = argv[i] end
  end
  local reader
  if args[1] == 'hide' or args[1] == 'only' then
    local n = tonumber(args[2] or '')
    if n == nil or n < 0 or n ~= math.floor(n) or #args < 2 + n then
      return records_fail(args[1] .. ' expects a count and that many field ids')
    end
    local set = {}
    for i = 3, 2 + n do set[args[i]] = true end
    reader = { [args[1]] = set }
    local rest = {}
    for i = 3 + n, #args do rest[#rest + 1] = args[i] end
    args = rest
  end
  if #args < 1 then return records_fail('expects a mode: page or ids') end
  local ids, next_id
  local by_ids = args[1] == 'ids'
  if args[1] == 'page' then
    local after, limit = args[2] or '', tonumber(args[3] or '')
    if limit == nil or limit < 1 or limit > 1000 or limit ~= math.floor(limit) then
      return records_fail('limit must be an integer in 1..1000')
    end
    local from = '-'
    if after ~= '' then from = '(' .. after end
    ids = redis.call('ZRANGE', keys[2], from, '+', 'BYLEX', 'LIMIT', 0, limit + 1)
    if #ids > limit then
      ids[#ids] = nil
      next_id = ids[#ids]
    end
  elseif by_ids then
    ids = {}
    local seen = {}
    for i = 2, #args do
      if not seen[args[i]] then
        seen[args[i]] = true
        ids[#ids + 1] = args[i]
      end
    end
  else
    return records_fail('mode must be page or ids')
  end
  local last = redis.call('XREVRANGE', keys[1], '+', '-', 'COUNT', 1)
  local as_of = '0-0'
  if last[1] then as_of = last[1][1] end
  local out = { '{"records":[' }
  local memo = {}
  local any = false
  local used = 0
  local stopped_at = nil
  for i, id in ipairs(ids) do
    local key = scope .. ':rec:' .. id
    -- The byte bound, checked before the record is read, on the bytes
    -- its reader receives.
    if any and used + visible_bytes(key, reader) > max_bytes then
      stopped_at = i
      break
    end
    local mark = #out
    if any then out[mark + 1] = ',' end
    if append_state(out, key, id, memo, reader) then
      any = true
      for j = mark + 1, #out do used = used + #out[j] end
    else
      out[mark + 1] = nil -- no state: drop the separator
    end
  end
  out[#out + 1] = ']'
  if stopped_at and not by_ids then
    next_id = ids[stopped_at - 1]
  end
  if next_id then
    out[#out + 1] = ',"next":'
    out[#out + 1] = jstr(next_id)
  end
  if stopped_at and by_ids then
    local rest = {}
    for j = stopped_at, #ids do rest[#rest + 1] = jstr(ids[j]) end
    out[#out + 1] = ',"remaining":[' .. table.concat(rest, ',') .. ']'
  end
  out[#out + 1] = ',"asOf":'
  out[#out + 1] = jstr(as_of)
  out[#out + 1] = '}'
  return table.concat(out)
end

local function seed(keys, args)
  local scope = table_scope(keys)
  if scope == nil then return records_fail(KEYS_ERROR) end
  -- Parse and check everything first: nothing is written on bad input.
  local records = {}
  local i = 1
  while i <= #args do
    local id, version, deleted, n = args[i], tonumber(args[i + 1]), args[i + 2], tonumber(args[i + 3])
    if not is_id(id) then return records_fail('recordId must be an id') end
    if version == nil or version < 1 or version > MAX_SEED_VERSION or version ~= math.floor(version) then
      return records_fail('version must be an integer in 1..2^53-1')
    end
    if deleted ~= '0' and deleted ~= '1' then return records_fail('deleted must be 0 or 1') end
    if n == nil or n < 0 or n ~= math.floor(n) or i + 3 + 2 * n > #args then
      return records_fail('bad field count for ' .. id)
    end
    local fields = {}
    for f = 1, n do
      local field, value = args[i + 2 + 2 * f], args[i + 3 + 2 * f]
      if not is_id(field) then return records_fail('fieldId must be an id') end
      local ok = pcall(cjson.decode, value)
      if not ok then return records_fail('field values must be JSON text') end
      fields[#fields + 1] = { field, value }
    end
    records[#records + 1] = { id = id, version = version, deleted = deleted, fields = fields }
    i = i + 4 + 2 * n
  end
  local written, skipped = 0, 0
  for _, r in ipairs(records) do
    local key = scope .. ':rec:' .. r.id
    local held = tonumber(redis.call('HGET', key, '_v')) or 0
    if r.version > held then
      redis.call('DEL', key)
      local bytes = 0
      for _, fv in ipairs(r.fields) do
        if fv[2] ~= 'null' then bytes = bytes + #fv[1] + #fv[2] end
      end
      local hset = { 'HSET', key, '_v', jint(r.version), '_b', jint(bytes) }
      if r.deleted == '1' then
        hset[#hset + 1] = '_del'
        hset[#hset + 1] = '1'
      end
      for _, fv in ipairs(r.fields) do
        if fv[2] ~= 'null' then
          hset[#hset + 1] = 'v:' .. fv[1]
          hset[#hset + 1] = jint(r.version)
          hset[#hset + 1] = 'd:' .. fv[1]
          hset[#hset + 1] = fv[2]
        end
      end
      redis.call(unpack(hset))
      redis.call('ZADD', keys[2], 0, r.id)
      written = written + 1
    else
      skipped = skipped + 1
    end
  end
  return '{"written":' .. written .. ',"skipped":' .. skipped .. '}'
end

redis.register_function { function_name = 'rtsync_load', callback = load, flags = { 'no-writes' } }
redis.register_function { function_name = 'rtsync_seed', callback = seed }
