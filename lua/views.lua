
--[==[
rtsync_view_set, rtsync_view_get (v1.3): a view's filter (docs/protocol.md
3.5), stored at `<p>:{T}:view:<viewId>` and announced in the table's
stream, so every sidecar switches to it at the same place in the table's
order of events.

FCALL rtsync_view_set 5 <p>:{T}:events <p>:{T}:view:<viewId> <p>:{T}:ver
                        <p>:{T}:sink-floor <p>:{T}:presence
                        <header> <filter> [<retentionMs>]
  header   JSON object {"viewId", "userId", "tableId"?}
  filter   the filter as JSON object text (at most 65536 bytes), or "" for
           none (the view is then the whole table). The sidecar checks the
           filter language (src/filter) before it calls; this function
           checks only that it is an object. A filter the sidecars cannot
           read is taken by them as no filter (logged).
  retentionMs  as rtsync_commit's (default 86400000)
  KEYS: 1 the stream, 2 the view's key (a string), 3 the table's versions
  (hash, field "view:<viewId>"), 4 the sink floor (read only, as
  rtsync_commit), 5 the doorbell channel (SPUBLISH, as rtsync_commit).
  One call: bumps the view's version, appends
    type "filter", entityType "view", entityId <viewId>, userId,
    tableId?, version <new version>,
    changes [{"fieldId":"filter","oldValue"?:<previous filter>,
              "newValue"?:<filter>}]
  (no oldValue when the view had no filter, no newValue when it has none
  now), trimming by retention as rtsync_commit does, then writes the key
  (SET, or DEL for "") and rings the doorbell.
  -> [eventId, version]
  Nothing is written when it answers an error (RTSYNC_INVALID).

FCALL rtsync_view_get 2 <p>:{T}:view:<viewId> <p>:{T}:ver <viewId>
  -> [filter text or nil, version (0 when never set)]; read-only, one
  atomic read of both, so a sidecar that loads a view knows which of the
  stream's `view` events are older than what it read.
]==]

define('views', { 'base', 'commit' }, function(m)
local INVALID = m.base.INVALID
local is_id, jint = m.base.is_id, m.base.jint
local call, register = m.base.call, m.base.register
local append, decode_json = m.commit.append, m.commit.decode_json

local MAX_FILTER_BYTES = 65536
local MAX_VERSION = 9007199254740991

local function fail(name, msg)
  return redis.error_reply(INVALID .. name .. ': ' .. msg)
end

-- The FieldChange list of a view event: the previous and the new filter
-- (JSON object texts, embedded as they are; "" or nil for none).
local function filter_changes(old, new)
  local out = '[{"fieldId":"filter"'
  if old and old ~= '' and decode_json(old, 'old', 'object') then
    out = out .. ',"oldValue":' .. old
  end
  if new ~= '' then
    out = out .. ',"newValue":' .. new
  end
  return out .. '}]'
end

local function view_set(keys, args)
  local name = 'rtsync_view_set'
  if #keys ~= 5 then
    return fail(name, 'expects 5 keys: stream, view, versions, sink floor, doorbell')
  end
  local header, err = decode_json(args[1], 'header', 'object')
  if not header then return fail(name, err or 'header must be a JSON object') end
  if not is_id(header.viewId) or not is_id(header.userId) then
    return fail(name, 'header needs viewId and userId, each an id')
  end
  if header.tableId ~= nil and not is_id(header.tableId) then
    return fail(name, 'tableId must be an id')
  end
  local filter = args[2] or ''
  if #filter > MAX_FILTER_BYTES then
    return fail(name, 'filter over ' .. MAX_FILTER_BYTES .. ' bytes')
  end
  if filter ~= '' and not decode_json(filter, 'filter', 'object') then
    return fail(name, 'filter must be a JSON object, or "" for none')
  end
  local retention_ms = tonumber(args[3] or '86400000')
  if retention_ms == nil or retention_ms <= 0 then
    return fail(name, 'retentionMs must be a positive number')
  end
  local field = 'view:' .. header.viewId
  -- Read first: a key of the wrong type refuses the call before any write.
  local cur_v = tonumber(call('HGET', keys[3], field)) or 0
  if cur_v >= MAX_VERSION then
    return fail(name, field .. ' is at the largest version (2^53-1)')
  end
  local old = call('GET', keys[2])
  local new_v = cur_v + 1
  local change = { type = 'filter', entityType = 'view', entityId = header.viewId,
    userId = header.userId, tableId = header.tableId }
  local id = append(keys, change, new_v, filter_changes(old, filter), '', retention_ms)
  if filter == '' then
    call('DEL', keys[2])
  else
    call('SET', keys[2], filter)
  end
  call('HSET', keys[3], field, jint(new_v))
  return { id, new_v }
end

local function view_get(keys, args)
  if #keys ~= 2 or not is_id(args[1]) then
    return fail('rtsync_view_get', 'expects 2 keys (view, versions) and the view id')
  end
  local version = tonumber(call('HGET', keys[2], 'view:' .. args[1])) or 0
  return { call('GET', keys[1]), version }
end

register('rtsync_view_set', view_set)
register('rtsync_view_get', view_get, { flags = { 'no-writes' } })
end)
