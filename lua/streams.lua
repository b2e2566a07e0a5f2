
--[==[
rtsync_stream_release: a sidecar stops reading a table stream.

FCALL rtsync_stream_release 1 <p>:{T}:events <group>

Destroys the consumer group `group` (a sidecar's instance id; "" for none),
then deletes the stream when it holds no entry and no group is left: a
table subscribed to but never written keeps no key. Returns the number of
groups left, or -1 when the stream is gone. Atomic, so a commit (XADD) or
another sidecar's group is never lost in between.
]==]

define('streams', { 'base' }, function(m)
local INVALID = m.base.INVALID
local call, register = m.base.call, m.base.register

local function stream_release(keys, args)
  if #keys ~= 1 or #args ~= 1 then
    return redis.error_reply(INVALID .. 'rtsync_stream_release: expects 1 key (stream) and 1 argument (group)')
  end
  local stream, group = keys[1], args[1]
  if call('EXISTS', stream) == 0 then
    return -1
  end
  if group ~= '' then
    call('XGROUP', 'DESTROY', stream, group)
  end
  local left = #call('XINFO', 'GROUPS', stream)
  if left == 0 and call('XLEN', stream) == 0 then
    call('DEL', stream)
    return -1
  end
  return left
end

register('rtsync_stream_release', stream_release)
end)
