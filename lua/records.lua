
--[==[
The table's state with versions (v1.1): the record index, pages of record
states for `load_records`, and seeding from the app's database.

`<p>:{T}:records` (sorted set, every score 0, so members sort by id) holds
the id of every record rtsync_commit or rtsync_seed wrote (deleted ones too:
a client must learn of a deletion). The record hashes are
`<p>:{T}:rec:<recordId>` (see commit.lua), in the same cluster slot.

KEYS (the full forms; what the sidecar sends, built by src/store/keys.rs)
  1 `<p>:{T}:events`, 2 `<p>:{T}:records`, then 3.. one record hash
  `<p>:{T}:rec:<recordId>` per record the call reads or writes, in the
  order below. A record key must end with `:rec:<recordId>`.
The first documented forms, kept for compatibility, give KEYS 1 and 2 only
(numkeys 2): the adapter derives the record keys from KEYS[1] (`<p>:{T}`
and `:rec:<recordId>`), reading the page's ids from the index for a page.

rtsync_load  (read-only)
  FCALL rtsync_load <2+n> <p>:{T}:events <p>:{T}:records <record key>*n
        [bytes <max>] [hide|only <n> <fieldId>*n] page <after> <limit>
      the record keys of the page's ids, as the index lists them after
      <after>, in order (at most <limit>; read them with ZRANGE <records>
      (<after> + BYLEX LIMIT 0 <limit>). When the index no longer lists
      those ids (a record was added since), the answer is {"retry": true}
      and nothing else: read the ids again and call again.
  FCALL rtsync_load <2+n> <p>:{T}:events <p>:{T}:records <record key>*n
        [bytes <max>] [hide|only <n> <fieldId>*n] ids <recordId>*n
      one record key per listed id, in the same order (repeats too).
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
  FCALL rtsync_seed <2+n> <p>:{T}:events <p>:{T}:records <record key>*n
        (<recordId> <version> <deleted 0|1> <nfields> (<fieldId> <value-json>)*nfields)*n
      one record key per seeded record, in the same order.
  Writes each record only when <version> (1..2^53-1) is greater than the
  version held (a seed never overwrites a newer edit): the record's state is
  replaced by the given fields, each field's version set to <version>.
  Appends no event. The sidecar's seed route checks the size bounds
  (RTS_MAX_RECORD_BYTES for a record, the event size for a field) first.
  -> JSON {"written": n, "skipped": n}
]==]

define('records', { 'base', 'commit' }, function(m)
local INVALID, is_id, jstr, jint = m.base.INVALID, m.base.is_id, m.base.jstr, m.base.jint
local call, register = m.base.call, m.base.register
local readable_by, value_json, visible_bytes = m.commit.readable_by, m.commit.value_json, m.commit.visible_bytes

local MAX_SEED_VERSION = 9007199254740991 -- 2^53-1, as rtsync_commit
local DEFAULT_PAGE_BYTES = 1048576

local function records_fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_records: ' .. msg)
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
  local flat = call('HGETALL', rec_key)
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

-- True when `key` is record `id`'s hash: it ends with `:rec:<id>`.
local function is_record_key(key, id)
  local tail = ':rec:' .. id
  return type(key) == 'string' and key:sub(-#tail) == tail
end

-- ARGV of rtsync_load: {max_bytes, reader, mode, after, limit, ids}, or
-- nil and the error reply.
local function parse_load(argv)
  local args, max_bytes = argv, DEFAULT_PAGE_BYTES
  if argv[1] == 'bytes' then
    max_bytes = tonumber(argv[2] or '')
    if max_bytes == nil or max_bytes < 1 or max_bytes ~= math.floor(max_bytes) then
      return nil, records_fail('bytes must be a positive integer')
    end
    args = {}
    for i = 3, #argv do args[#args + 1] = argv[i] end
  end
  local reader
  if args[1] == 'hide' or args[1] == 'only' then
    local n = tonumber(args[2] or '')
    if n == nil or n < 0 or n ~= math.floor(n) or #args < 2 + n then
      return nil, records_fail(args[1] .. ' expects a count and that many field ids')
    end
    local set = {}
    for i = 3, 2 + n do set[args[i]] = true end
    reader = { [args[1]] = set }
    local rest = {}
    for i = 3 + n, #args do rest[#rest + 1] = args[i] end
    args = rest
  end
  if #args < 1 then return nil, records_fail('expects a mode: page or ids') end
  local q = { max_bytes = max_bytes, reader = reader, mode = args[1] }
  if q.mode == 'page' then
    q.after, q.limit = args[2] or '', tonumber(args[3] or '')
    if q.limit == nil or q.limit < 1 or q.limit > 1000 or q.limit ~= math.floor(q.limit) then
      return nil, records_fail('limit must be an integer in 1..1000')
    end
  elseif q.mode == 'ids' then
    q.ids = {}
    for i = 2, #args do q.ids[#q.ids + 1] = args[i] end
  else
    return nil, records_fail('mode must be page or ids')
  end
  return q
end

-- The page's ids after `q.after` (at most q.limit), and the id to pass as
-- `after` next when more may follow.
local function page_ids(records_key, q)
  local from = '-'
  if q.after ~= '' then from = '(' .. q.after end
  local ids = call('ZRANGE', records_key, from, '+', 'BYLEX', 'LIMIT', 0, q.limit + 1)
  local next_id
  if #ids > q.limit then
    ids[#ids] = nil
    next_id = ids[#ids]
  end
  return ids, next_id
end

-- The ids to read, each with its key (KEYS[2 + its position in the list
-- the keys were given for]), and `next`; or nil and the answer to give.
local function load_targets(keys, q)
  local targets, next_id = {}, nil
  if q.mode == 'page' then
    local ids
    ids, next_id = page_ids(keys[2], q)
    for i, id in ipairs(ids) do
      if not is_record_key(keys[2 + i], id) then return nil, '{"retry":true}' end
      targets[i] = { id = id, key = keys[2 + i] }
    end
    return targets, next_id
  end
  if #keys ~= 2 + #q.ids then
    return nil, records_fail('expects ' .. (2 + #q.ids) .. ' keys: events, records and one record key per id')
  end
  local seen = {}
  for i, id in ipairs(q.ids) do
    if not is_record_key(keys[2 + i], id) then
      return nil, records_fail('KEYS[' .. (2 + i) .. '] must be the key of record ' .. id)
    end
    if not seen[id] then
      seen[id] = true
      targets[#targets + 1] = { id = id, key = keys[2 + i] }
    end
  end
  return targets, nil
end

-- Appends the states of `targets` to `out` within q.max_bytes (always
-- one); the position of the first target not read, if the bound stopped it.
local function read_states(out, targets, q)
  local memo, any, used = {}, false, 0
  for i, t in ipairs(targets) do
    -- The byte bound, checked before the record is read, on the bytes
    -- its reader receives.
    if any and used + visible_bytes(t.key, q.reader) > q.max_bytes then
      return i
    end
    local mark = #out
    if any then out[mark + 1] = ',' end
    if append_state(out, t.key, t.id, memo, q.reader) then
      any = true
      for j = mark + 1, #out do used = used + #out[j] end
    else
      out[mark + 1] = nil -- no state: drop the separator
    end
  end
  return nil
end

local function load(keys, argv)
  local q, qerr = parse_load(argv)
  if q == nil then return qerr end
  local targets, next_id = load_targets(keys, q)
  if targets == nil then return next_id end
  local last = call('XREVRANGE', keys[1], '+', '-', 'COUNT', 1)
  local as_of = '0-0'
  if last[1] then as_of = last[1][1] end
  local out = { '{"records":[' }
  local stopped_at = read_states(out, targets, q)
  out[#out + 1] = ']'
  if stopped_at and q.mode == 'page' then
    next_id = targets[stopped_at - 1].id
  end
  if next_id then
    out[#out + 1] = ',"next":'
    out[#out + 1] = jstr(next_id)
  end
  if stopped_at and q.mode == 'ids' then
    local rest = {}
    for j = stopped_at, #targets do rest[#rest + 1] = jstr(targets[j].id) end
    out[#out + 1] = ',"remaining":[' .. table.concat(rest, ',') .. ']'
  end
  out[#out + 1] = ',"asOf":'
  out[#out + 1] = jstr(as_of)
  out[#out + 1] = '}'
  return table.concat(out)
end

-- The seed's records, parsed and checked; nil and the error reply.
local function parse_seed(args)
  local records = {}
  local i = 1
  while i <= #args do
    local id, version, deleted, n = args[i], tonumber(args[i + 1]), args[i + 2], tonumber(args[i + 3])
    if not is_id(id) then return nil, records_fail('recordId must be an id') end
    if version == nil or version < 1 or version > MAX_SEED_VERSION or version ~= math.floor(version) then
      return nil, records_fail('version must be an integer in 1..2^53-1')
    end
    if deleted ~= '0' and deleted ~= '1' then return nil, records_fail('deleted must be 0 or 1') end
    if n == nil or n < 0 or n ~= math.floor(n) or i + 3 + 2 * n > #args then
      return nil, records_fail('bad field count for ' .. id)
    end
    local fields = {}
    for f = 1, n do
      local field, value = args[i + 2 + 2 * f], args[i + 3 + 2 * f]
      if not is_id(field) then return nil, records_fail('fieldId must be an id') end
      local ok = pcall(cjson.decode, value)
      if not ok then return nil, records_fail('field values must be JSON text') end
      fields[#fields + 1] = { field, value }
    end
    records[#records + 1] = { id = id, version = version, deleted = deleted, fields = fields }
    i = i + 4 + 2 * n
  end
  return records
end

local function seed(keys, args)
  -- Parse and check everything first: nothing is written on bad input.
  local records, err = parse_seed(args)
  if records == nil then return err end
  if #keys ~= 2 + #records then
    return records_fail('expects ' .. (2 + #records) .. ' keys: events, records and one record key per record')
  end
  for i, r in ipairs(records) do
    if not is_record_key(keys[2 + i], r.id) then
      return records_fail('KEYS[' .. (2 + i) .. '] must be the key of record ' .. r.id)
    end
  end
  local written, skipped = 0, 0
  for i, r in ipairs(records) do
    local key = keys[2 + i]
    local held = tonumber(call('HGET', key, '_v')) or 0
    if r.version > held then
      call('DEL', key)
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
      call(unpack(hset))
      call('ZADD', keys[2], 0, r.id)
      written = written + 1
    else
      skipped = skipped + 1
    end
  end
  return '{"written":' .. written .. ',"skipped":' .. skipped .. '}'
end

-- `<p>:{T}` when KEYS are `<p>:{T}:events` and `<p>:{T}:records`.
local function table_scope(keys)
  local scope = #keys == 2 and keys[1]:match('^(.*):events$')
  if scope and keys[2] == scope .. ':records' then
    return scope
  end
  return nil
end

-- The compatibility adapters: 2 KEYS (events, records) become the full
-- list, each record key derived as `<p>:{T}:rec:<recordId>` from KEYS[1]
-- (a page's ids read from the index as the core will read them).
local function with_record_keys(keys, scope, ids)
  local full = { keys[1], keys[2] }
  for i, id in ipairs(ids) do full[2 + i] = scope .. ':rec:' .. id end
  return full
end

local function adapt_load(keys, argv)
  if #keys ~= 2 then return keys end
  local scope = table_scope(keys)
  if scope == nil then return nil, records_fail(KEYS_ERROR) end
  local q = parse_load(argv)
  if q == nil then return keys end -- the core answers the error
  local ids = q.ids
  if q.mode == 'page' then ids = page_ids(keys[2], q) end
  return with_record_keys(keys, scope, ids)
end

local function adapt_seed(keys, args)
  if #keys ~= 2 then return keys end
  local scope = table_scope(keys)
  if scope == nil then return nil, records_fail(KEYS_ERROR) end
  local records = parse_seed(args)
  if records == nil then return keys end -- the core answers the error
  local ids = {}
  for i, r in ipairs(records) do ids[i] = r.id end
  return with_record_keys(keys, scope, ids)
end

register('rtsync_load', load, { adapt = adapt_load, flags = { 'no-writes' } })
register('rtsync_seed', seed, { adapt = adapt_seed })

return {}
end)
