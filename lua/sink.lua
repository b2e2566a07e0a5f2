
--[==[
rtsync_sink_lease: one sink process owns a table's delivery at a time.

FCALL rtsync_sink_lease 1 <p>:{T}:sink-lease <owner> <ttl_ms>
  ttl_ms > 0: take the lease if it is free, or renew it if `owner` holds it;
              returns 1 when `owner` holds it afterwards, else 0.
  ttl_ms = 0: give the lease up if `owner` holds it; returns 1 if it did.

The lease is a string key holding the owner's instance id, expiring after
`ttl_ms` unless renewed: a sink that dies loses its tables when it expires.
]==]

define('sink', { 'base' }, function(m)
local INVALID = m.base.INVALID
local call, register = m.base.call, m.base.register

local function sink_lease(keys, args)
  if #keys ~= 1 or #args ~= 2 then
    return redis.error_reply(INVALID .. 'rtsync_sink_lease: expects 1 key (lease) and 2 arguments (owner, ttl_ms)')
  end
  local lease, owner = keys[1], args[1]
  local ttl = tonumber(args[2])
  if owner == '' or ttl == nil or ttl < 0 or ttl ~= math.floor(ttl) then
    return redis.error_reply(INVALID .. 'rtsync_sink_lease: owner must be non-empty and ttl_ms a non-negative integer')
  end
  local holder = call('GET', lease)
  if ttl == 0 then
    if holder == owner then
      call('DEL', lease)
      return 1
    end
    return 0
  end
  if holder == false then
    call('SET', lease, owner, 'PX', ttl)
    return 1
  end
  if holder == owner then
    call('PEXPIRE', lease, ttl)
    return 1
  end
  return 0
end

register('rtsync_sink_lease', sink_lease)
end)
