
--[==[
rtsync_record_history: one record's changes, newest first, read from its
history index (kept by rtsync_commit, see "History index" in commit.lua), so
the cost follows the record's own changes and never the table's stream.
Read-only.

FCALL rtsync_record_history 2 <p>:{T}:events <p>:{T}:rh:<recordId>
      <before> <count> <bytes>
  before  a stream id: only changes older than it ("" for the newest)
  count   the most entries to answer, 1..
  bytes   the most bytes of entry data (the sum of each entry's field names
          and values) to answer, 1.., but always the first entry
  -> [entries, next]: the entries as XRANGE answers them, newest first;
     next is the id of the last entry answered when the index holds older
     ids (the `before` of the next page), else nil.
Ids the stream no longer holds (trimmed, or a stream that began again) are
skipped. Cost: the index's ids (at most its cap) and one XRANGE of one id
per entry answered or skipped.
]==]

define('record_history', { 'base' }, function(m)
local INVALID = m.base.INVALID
local call, register = m.base.call, m.base.register

local function fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_record_history: ' .. msg)
end

-- A stream id as two numbers, or nil.
local function parse_id(id)
  local ms, seq = id:match('^(%d+)-(%d+)$')
  if not ms then return nil end
  return { tonumber(ms), tonumber(seq) }
end

local function older(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

local function entry_bytes(e)
  local n = 0
  for _, v in ipairs(e[2]) do n = n + #v end
  return n
end

local function record_history(keys, args)
  if #keys ~= 2 then
    return fail('expects 2 keys: <p>:{T}:events <p>:{T}:rh:<recordId>')
  end
  local before = nil
  if args[1] and args[1] ~= '' then
    before = parse_id(args[1])
    if not before then return fail('before must be a stream id') end
  end
  local count, bytes = tonumber(args[2] or ''), tonumber(args[3] or '')
  if not count or not bytes or count < 1 or bytes < 1 then
    return fail('expects <before> <count> <bytes>')
  end
  local ids = call('LRANGE', keys[2], 0, -1)
  local out, used, next_id = {}, 0, false
  for i = 1, #ids do
    local id = parse_id(ids[i])
    if id and (before == nil or older(id, before)) then
      if #out >= count then
        next_id = out[#out][1]
        break
      end
      local got = call('XRANGE', keys[1], ids[i], ids[i])
      local e = got[1]
      if e then
        local size = entry_bytes(e)
        if #out > 0 and used + size > bytes then
          next_id = out[#out][1]
          break
        end
        out[#out + 1] = e
        used = used + size
      end
    end
  end
  return { out, next_id }
end

register('rtsync_record_history', record_history, { flags = { 'no-writes' } })
end)
