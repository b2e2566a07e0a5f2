
--[==[
rtsync_history: reads of a table's event history bounded by bytes as well
as by count, so a reply never grows with the size of the events asked for
(recent_changes, recovery). Read-only.

FCALL rtsync_history 1 <p>:{T}:events range <after> <until> <count> <bytes>
  -> the entries after <after> (exclusive) up to <until> (inclusive),
     oldest first, as XRANGE answers them: at most <count> entries and
     <bytes> bytes (the sum of each entry's field names and values), but
     always the first one.
FCALL rtsync_history 1 <p>:{T}:events recent <until> <count> <bytes>
  -> the latest entries at or before <until>, oldest first, within the same
     bounds (newest kept first).
FCALL rtsync_history 1 <p>:{T}:events size <after> <until> <count> <bytes>
  -> [n, bytes]: how many entries and bytes lie in (<after>, <until>],
     counting stops once either passes its bound (n > count or
     bytes > <bytes> then says "too many"). Nothing is returned but the two
     numbers.
]==]

define('history', { 'base' }, function(m)
local INVALID = m.base.INVALID
local call, register = m.base.call, m.base.register

-- Entries read per call inside the function.
local HISTORY_CHUNK = 16

local function entry_bytes(e)
  local n = 0
  for _, v in ipairs(e[2]) do n = n + #v end
  return n
end

local function history_fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_history: ' .. msg)
end

-- Walks entries from `from` towards `to` (XRANGE, or XREVRANGE when
-- `reverse`), calling visit(entry, bytes) until it returns false.
local function walk(key, from, to, reverse, visit)
  local cmd = 'XRANGE'
  if reverse then cmd = 'XREVRANGE' end
  while true do
    local chunk = call(cmd, key, from, to, 'COUNT', HISTORY_CHUNK)
    for _, e in ipairs(chunk) do
      if not visit(e, entry_bytes(e)) then return end
    end
    if #chunk < HISTORY_CHUNK then return end
    from = '(' .. chunk[#chunk][1]
  end
end

local function history(keys, args)
  if #keys ~= 1 then return history_fail('expects 1 key: <p>:{T}:events') end
  local mode = args[1]
  local key = keys[1]
  if mode == 'range' or mode == 'size' then
    local after, upto = args[2], args[3]
    local count, bytes = tonumber(args[4] or ''), tonumber(args[5] or '')
    if not after or not upto or not count or not bytes or count < 1 or bytes < 1 then
      return history_fail('expects <after> <until> <count> <bytes>')
    end
    local out, used, n = {}, 0, 0
    walk(key, "(" .. after, upto, false, function(e, size)
      if mode == 'size' then
        n = n + 1
        used = used + size
        return n <= count and used <= bytes
      end
      if #out > 0 and (#out >= count or used + size > bytes) then return false end
      out[#out + 1] = e
      used = used + size
      return #out < count
    end)
    if mode == 'size' then return { n, used } end
    return out
  elseif mode == 'recent' then
    local upto = args[2]
    local count, bytes = tonumber(args[3] or ''), tonumber(args[4] or '')
    if not upto or not count or not bytes or count < 1 or bytes < 1 then
      return history_fail('expects <until> <count> <bytes>')
    end
    local newest, used = {}, 0
    walk(key, upto, "-", true, function(e, size)
      if #newest > 0 and used + size > bytes then return false end
      newest[#newest + 1] = e
      used = used + size
      return #newest < count
    end)
    local out = {}
    for i = #newest, 1, -1 do out[#out + 1] = newest[i] end
    return out
  end
  return history_fail('mode must be range, recent or size')
end

register('rtsync_history', history, { flags = { 'no-writes' } })
end)
