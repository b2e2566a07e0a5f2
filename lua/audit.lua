
--[==[
rtsync_audit: appends audit records to the deployment's audit stream as a
hash chain (docs/protocol.md section 12).

FCALL rtsync_audit 2 <p>:audit {<p>:audit}:head <retention_ms> <record>...
  <record>  a JSON object of strings, the fields below (absent or "" for
            none; no others), at most 64 records and 1024 bytes per value
  -> the ids of the entries added, in order

The head key `{<p>:audit}:head` (its hash tag is the stream's name, so both
keys share one slot in a cluster) holds the hash of the last entry written.
Each record becomes one entry, trimmed with `MINID ~ <now - retention_ms>`:

  prev      the previous entry's `hash` (the head; without a head, the last
            entry's hash; "" for the first entry ever)
  ts        milliseconds since the epoch, when the sidecar saw it
  sidecar   the instance id of the sidecar that wrote it
  actor     the user id, "api" for the HTTP API's token; absent when no one
            authenticated
  addr      the source address (IP)
  action    what happened (auth_failed, request_refused, record_deleted, ...)
  tableId, recordId   the ids concerned, if any
  outcome   how it ended (a code, a commit status, a close code)
  detail    a short text (a reason, a limit's name, counts); ids, never values
  hash      see below; always the last field

The hash, byte-exactly: with ns(s) = the decimal byte length of s, ':', s,
',' (a netstring), the content of an entry is the concatenation of
ns(name) .. ns(value) for each of its fields in stream order, from `prev` up
to but excluding `hash`; `hash` = lowercase hex SHA-1 of that content. So a
verifier reads an entry's fields in the order XRANGE returns them, drops the
last pair (`hash`), hashes the rest, and compares; and checks that each
entry's `prev` is the `hash` of the entry before it. After trimming, the
oldest kept entry's `prev` is taken as given. Nothing is written when the
call answers an error (every record is checked first).
]==]

define('audit', { 'base' }, function(m)
local INVALID = m.base.INVALID
local call, register = m.base.call, m.base.register

-- The content fields, in the order they are written.
local FIELDS = { 'ts', 'sidecar', 'actor', 'addr', 'action', 'tableId', 'recordId', 'outcome', 'detail' }
local KNOWN = {
  ts = true, sidecar = true, actor = true, addr = true, action = true,
  tableId = true, recordId = true, outcome = true, detail = true,
}
local MAX_RECORDS = 64
local MAX_VALUE = 1024

local function audit_fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_audit: ' .. msg)
end

local function ns(s)
  return #s .. ':' .. s .. ','
end

-- A record's fields in order, or nil and what is wrong with it.
local function record_fields(text)
  local ok, rec = pcall(cjson.decode, text)
  if not ok or type(rec) ~= 'table' then return nil, 'a record must be a JSON object' end
  for k, _ in pairs(rec) do
    if not KNOWN[k] then return nil, 'unknown field ' .. tostring(k) end
  end
  local out = {}
  for _, name in ipairs(FIELDS) do
    local v = rec[name]
    if v ~= nil and v ~= cjson.null then
      if type(v) ~= 'string' or #v > MAX_VALUE then
        return nil, name .. ' must be a string of at most ' .. MAX_VALUE .. ' bytes'
      end
      if v ~= '' then
        out[#out + 1] = name
        out[#out + 1] = v
      end
    end
  end
  if rec.ts == nil or rec.action == nil or rec.outcome == nil then
    return nil, 'a record needs ts, action and outcome'
  end
  return out
end

-- The hash of the last entry: the head, else the last entry's own.
local function chain_head(stream, head)
  local h = call('GET', head)
  if h then return h end
  local last = call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last == nil then return '' end
  local fields = last[2]
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'hash' then return fields[i + 1] end
  end
  return ''
end

local function audit(keys, args)
  if #keys ~= 2 then return audit_fail('expects 2 keys (stream, head)') end
  local retention = tonumber(args[1] or '')
  if retention == nil or retention < 1 or retention ~= math.floor(retention) then
    return audit_fail('retention_ms must be a positive integer')
  end
  if #args < 2 or #args > MAX_RECORDS + 1 then
    return audit_fail('expects 1..' .. MAX_RECORDS .. ' records')
  end
  local records = {}
  for i = 2, #args do
    local fields, err = record_fields(args[i])
    if fields == nil then return audit_fail(err) end
    records[#records + 1] = fields
  end
  local stream, head = keys[1], keys[2]
  local t = call('TIME')
  local min_id = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - retention
  local prev = chain_head(stream, head)
  local ids = {}
  for _, fields in ipairs(records) do
    local entry = { 'prev', prev }
    local content = ns('prev') .. ns(prev)
    for i = 1, #fields - 1, 2 do
      entry[#entry + 1] = fields[i]
      entry[#entry + 1] = fields[i + 1]
      content = content .. ns(fields[i]) .. ns(fields[i + 1])
    end
    prev = redis.sha1hex(content)
    entry[#entry + 1] = 'hash'
    entry[#entry + 1] = prev
    ids[#ids + 1] = call('XADD', stream, 'MINID', '~', string.format('%d', math.max(min_id, 0)), '*', unpack(entry))
  end
  call('SET', head, prev)
  return ids
end

register('rtsync_audit', audit)
end)
