#!lua name=rtsync
--[[
rtsync Redis Functions library: the atomic commit of one change.

Every writer goes through `rtsync_commit`: the sidecars (WebSocket and HTTP
API) and any other service that wants the version check. One call checks the
versions, writes the entity state, appends the event to the stream (trimming
by retention) and returns the CommitResult, atomically.

FCALL rtsync_commit <numkeys: 2 or 3> <stream> <state> [<dedup>]
                    <change> <changes> <metadata> [<retentionMs>]

KEYS
  1 stream   `<p>:{T}:events` (or `<p>:{B}:base-events` for entityType "base")
  2 state    records: `<p>:{T}:rec:<recordId>` (hash: _v, _del, v:<f>, d:<f>);
             other entities: `<p>:{T}:ver` (hash: "<entityType>:<entityId>" -> version)
  3 dedup    `<p>:{T}:cc:<clientChangeId>`; required when the change has a
             clientChangeId, omitted (numkeys 2) otherwise
ARGV
  1 change     JSON object: {"type", "entityType", "entityId", "userId",
               "baseId"?, "tableId"?, "version"?, "clientChangeId"?, "origin"?}
               type: create | update | delete (records); any word for others
               version: the version the change was based on; absent = blind write
  2 changes    JSON array of {"fieldId", "oldValue"?, "newValue"?}, or "" for none.
               Written to the stream verbatim.
  3 metadata   JSON object, or "". Written verbatim. {"onConflict": "reject"}
               turns a conflicting write into a rejection.
  4 retention  milliseconds of history to keep (default 86400000)

RETURNS a JSON string, the CommitResult:
  {"status": "applied"|"merged"|"overwritten"|"rejected"|"duplicate",
   "eventId"?: "<stream id>", "version": n,
   "conflicts"?: [{"fieldId", "theirValue"}],
   "current"?: {"version", "fields": {fieldId: value}, "deleted"},
   "reason"?: "exists"|"deleted"|"conflict"|"stale_version"|"version_ahead"}
A rejected change writes nothing. Bad input returns an error reply starting
with "ERR rtsync_commit:" and writes nothing. A committed change also rings
the table's doorbell: SPUBLISH <p>:{T}:presence '{"event":"ring"}', so the
sidecars serving the table read its stream at once. (A producer that XADDs
directly may ring the same way; otherwise its entry is read by the
sidecars' periodic sweep, within a second.)

Example (another service updating field f1 of record r1 in table t1):
  FCALL rtsync_commit 2 rts:{t1}:events rts:{t1}:rec:r1
        '{"type":"update","entityType":"record","entityId":"r1","userId":"svc-billing","version":4}'
        '[{"fieldId":"f1","newValue":42}]' '' 86400000
]]

local DEDUP_TTL_SECS = 86400
local RING = '{"event":"ring"}'
local ENTITY_TYPES = { record = true, field = true, view = true, table = true, base = true }
local RECORD_TYPES = { create = true, update = true, delete = true }

local function fail(msg)
  return redis.error_reply('ERR rtsync_commit: ' .. msg)
end

local function is_id(s)
  return type(s) == 'string' and #s >= 1 and #s <= 128
    and not s:find('[%c{}]')
end

local function decode_json(raw, what, want)
  if raw == nil or raw == '' then
    return nil
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

local function is_null(v)
  return v == nil or v == cjson.null
end

-- Reads every field value of a record hash, for `current` in a rejection.
local function record_fields(state)
  local fields = {}
  local flat = redis.call('HGETALL', state)
  for i = 1, #flat, 2 do
    local k = flat[i]
    if k:sub(1, 2) == 'd:' then
      fields[k:sub(3)] = cmsgpack.unpack(flat[i + 1])
    end
  end
  return fields
end

local function empty_object_or(t)
  if next(t) == nil then
    return cjson.decode('{}')
  end
  return t
end

local function rejected(reason, version, current)
  return cjson.encode({
    status = 'rejected', reason = reason, version = version, current = current,
  })
end

local function append(stream, change, version, changes_raw, metadata_raw, retention_ms)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local min_id = now_ms - retention_ms
  if min_id < 0 then min_id = 0 end
  local args = { 'XADD', stream, 'MINID', '~', tostring(min_id), '*',
    'type', change.type, 'entityType', change.entityType,
    'entityId', change.entityId, 'userId', change.userId,
    'version', tostring(version) }
  local function opt(name, value)
    if value ~= nil and value ~= '' and value ~= cjson.null then
      args[#args + 1] = name
      args[#args + 1] = value
    end
  end
  opt('baseId', change.baseId)
  opt('tableId', change.tableId)
  opt('changes', changes_raw)
  opt('metadata', metadata_raw)
  opt('origin', change.origin)
  opt('clientChangeId', change.clientChangeId)
  local id = redis.call(unpack(args))
  -- Doorbell: sidecars serving the table read its stream when it rings.
  if stream:sub(-7) == ':events' then
    redis.call('SPUBLISH', stream:sub(1, -8) .. ':presence', RING)
  end
  return id
end

local function commit_record(keys, change, changes, metadata, changes_raw, metadata_raw, retention_ms)
  local stream, state = keys[1], keys[2]
  local cur_v = tonumber(redis.call('HGET', state, '_v')) or 0
  local deleted = redis.call('HGET', state, '_del') == '1'
  local exists = cur_v > 0 and not deleted
  local current = function()
    return { version = cur_v, fields = empty_object_or(record_fields(state)), deleted = deleted }
  end

  if change.type == 'create' and exists then
    return rejected('exists', cur_v, current())
  end
  if change.type ~= 'create' and deleted then
    return rejected('deleted', cur_v, current())
  end

  local base = change.version
  local status = 'applied'
  local conflicts = {}
  if base ~= nil and base > cur_v then
    return rejected('version_ahead', cur_v, current())
  end
  if base ~= nil and base < cur_v then
    local touched = {}
    if change.type == 'delete' then
      local flat = redis.call('HGETALL', state)
      for i = 1, #flat, 2 do
        if flat[i]:sub(1, 2) == 'v:' then
          touched[#touched + 1] = flat[i]:sub(3)
        end
      end
    else
      for _, c in ipairs(changes or {}) do
        touched[#touched + 1] = c.fieldId
      end
    end
    for _, f in ipairs(touched) do
      local fv = tonumber(redis.call('HGET', state, 'v:' .. f)) or 0
      if fv > base then
        local raw = redis.call('HGET', state, 'd:' .. f)
        local their = cjson.null
        if raw then their = cmsgpack.unpack(raw) end
        conflicts[#conflicts + 1] = { fieldId = f, theirValue = their }
      end
    end
    if #conflicts == 0 then
      status = 'merged'
    elseif metadata ~= nil and metadata.onConflict == 'reject' then
      return rejected('conflict', cur_v, current())
    else
      status = 'overwritten'
    end
  end

  local new_v = cur_v + 1
  if change.type == 'create' and deleted then
    redis.call('DEL', state)
  end
  local writes = { 'HSET', state, '_v', tostring(new_v) }
  if change.type == 'delete' then
    writes[#writes + 1] = '_del'
    writes[#writes + 1] = '1'
  else
    for _, c in ipairs(changes or {}) do
      writes[#writes + 1] = 'v:' .. c.fieldId
      writes[#writes + 1] = tostring(new_v)
      if is_null(c.newValue) then
        redis.call('HDEL', state, 'd:' .. c.fieldId)
      else
        writes[#writes + 1] = 'd:' .. c.fieldId
        writes[#writes + 1] = cmsgpack.pack(c.newValue)
      end
    end
  end
  redis.call(unpack(writes))
  if change.type == 'create' then
    redis.call('HDEL', state, '_del')
  end

  local id = append(stream, change, new_v, changes_raw, metadata_raw, retention_ms)
  local result = { status = status, eventId = id, version = new_v }
  if #conflicts > 0 then
    result.conflicts = conflicts
  end
  return cjson.encode(result)
end

local function commit_entity(keys, change, changes_raw, metadata_raw, retention_ms)
  local stream, state = keys[1], keys[2]
  local field = change.entityType .. ':' .. change.entityId
  local cur_v = tonumber(redis.call('HGET', state, field)) or 0
  if change.version ~= nil and change.version ~= cur_v then
    return rejected('stale_version', cur_v, { version = cur_v, fields = cjson.decode('{}') })
  end
  local new_v = cur_v + 1
  redis.call('HSET', state, field, tostring(new_v))
  local id = append(stream, change, new_v, changes_raw, metadata_raw, retention_ms)
  return cjson.encode({ status = 'applied', eventId = id, version = new_v })
end

local function commit(keys, args)
  if #keys < 2 or #keys > 3 then
    return fail('expects 2 or 3 keys: stream, state[, dedup]')
  end
  if #args < 3 then
    return fail('expects arguments: change, changes, metadata[, retentionMs]')
  end
  local change, err = decode_json(args[1], 'change', 'object')
  if change == nil then
    return fail(err or 'change is required')
  end
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
    return fail('entityId must be an id of 1..128 bytes without control characters or braces')
  end
  if not is_id(change.userId) then
    return fail('userId must be an id of 1..128 bytes without control characters or braces')
  end
  for _, name in ipairs({ 'baseId', 'tableId', 'origin' }) do
    local v = change[name]
    if not is_null(v) and not is_id(v) then
      return fail(name .. ' must be an id')
    end
    if v == cjson.null then change[name] = nil end
  end
  if is_null(change.version) then
    change.version = nil
  elseif type(change.version) ~= 'number' or change.version < 0
      or change.version ~= math.floor(change.version) then
    return fail('version must be a non-negative integer')
  end
  local cc = change.clientChangeId
  if is_null(cc) then
    change.clientChangeId = nil
    if #keys == 3 then
      return fail('the dedup key is given but the change has no clientChangeId')
    end
  else
    if type(cc) ~= 'string' or #cc < 1 or #cc > 128 then
      return fail('clientChangeId must be a string of 1..128 bytes')
    end
    if #keys ~= 3 then
      return fail('a change with a clientChangeId needs the dedup key as KEYS[3]')
    end
  end

  local changes, cerr = decode_json(args[2], 'changes', 'array')
  if cerr then return fail(cerr) end
  if changes ~= nil and not is_array(changes) then
    return fail('changes must be a JSON array')
  end
  for i, c in ipairs(changes or {}) do
    if type(c) ~= 'table' or not is_id(c.fieldId) then
      return fail('changes[' .. (i - 1) .. '].fieldId must be an id')
    end
  end
  local metadata, merr = decode_json(args[3], 'metadata', 'object')
  if merr then return fail(merr) end
  if metadata ~= nil and #metadata > 0 then
    return fail('metadata must be a JSON object')
  end
  local retention_ms = tonumber(args[4] or '86400000')
  if retention_ms == nil or retention_ms <= 0 then
    return fail('retentionMs must be a positive number')
  end

  if cc ~= nil and not is_null(cc) then
    local first = redis.call('GET', keys[3])
    if first then
      local result = cjson.decode(first)
      result.status = 'duplicate'
      return cjson.encode(result)
    end
  end

  local result
  if change.entityType == 'record' then
    result = commit_record(keys, change, changes, metadata, args[2], args[3], retention_ms)
  else
    result = commit_entity(keys, change, args[2], args[3], retention_ms)
  end
  if cc ~= nil and not is_null(cc) then
    local decoded = cjson.decode(result)
    if decoded.status ~= 'rejected' then
      redis.call('SET', keys[3], result, 'EX', DEDUP_TTL_SECS)
    end
  end
  return result
end


--[[
Presence: who is on a table, their cursors and selections, and colors.

KEYS (all functions)  1 presence `<p>:{T}:presence` (hash userId -> JSON)
                      2 seen     `<p>:{T}:seen`     (zset userId -> last seen ms)
                      3 colors   `<p>:{T}:colors`   (hash userId -> color)
Notices go to the sharded channel given as ARGV (`<p>:{T}:presence`) as JSON
{"event", "data", "origin"}: events user_joined, user_reconnected,
user_left, cursor_position, selection. `origin` is the connection that
caused it (receivers skip it).

rtsync_presence_join   ARGV channel, now, connId, user JSON {userId, userName,
                       avatarUrl?, tableId, viewId}
  -> JSON {status: "joined"|"reconnected"|"present", color, users: [UserPresence]}
rtsync_presence_leave  ARGV channel, now, connId, userId
  -> remaining connection count; at 0 the presence stays for the grace period
rtsync_presence_expire ARGV channel, now, userId, graceMs
  -> 1 if the user (no connections, left more than graceMs ago) was removed
rtsync_presence_touch  ARGV channel, now, connId, userId, kind ("heartbeat"|
                       "cursor"|"selection"), value JSON
  -> 1, or 0 when the user has no presence (the caller joins again)
rtsync_presence_sweep  ARGV channel, now, ttlMs, graceMs
  -> number of users removed (stale for ttlMs, or gone for graceMs)
]]

local PALETTE = {
  '#E6194B', '#3CB44B', '#4363D8', '#F58231', '#911EB4', '#42D4F4',
  '#F032E6', '#BFEF45', '#469990', '#9A6324', '#800000', '#000075',
  '#808000', '#FFD8B1', '#AAFFC3', '#DCBEFF',
}

local function public_view(p)
  return {
    userId = p.userId, userName = p.userName, avatarUrl = p.avatarUrl,
    tableId = p.tableId, viewId = p.viewId, cursor = p.cursor,
    selection = p.selection, lastSeen = p.lastSeen, color = p.color,
  }
end

local function notify(channel, event, data, origin)
  redis.call('SPUBLISH', channel, cjson.encode({ event = event, data = data, origin = origin }))
end

local function load_presence(key, user)
  local raw = redis.call('HGET', key, user)
  if not raw then return nil end
  local ok, p = pcall(cjson.decode, raw)
  if not ok or type(p) ~= 'table' then return nil end
  if type(p.conns) ~= 'table' then p.conns = {} end
  return p
end

local function save_presence(keys, p)
  redis.call('HSET', keys[1], p.userId, cjson.encode(p))
  redis.call('ZADD', keys[2], p.lastSeen, p.userId)
end

local function remove_presence(keys, channel, p)
  redis.call('HDEL', keys[1], p.userId)
  redis.call('ZREM', keys[2], p.userId)
  redis.call('HDEL', keys[3], p.userId)
  notify(channel, 'user_left', { userId = p.userId, tableId = p.tableId }, cjson.null)
end

local function pick_color(colors_key)
  local used = {}
  local flat = redis.call('HGETALL', colors_key)
  for i = 2, #flat, 2 do
    used[flat[i]] = (used[flat[i]] or 0) + 1
  end
  local best, best_count = PALETTE[1], math.huge
  for _, c in ipairs(PALETTE) do
    local n = used[c] or 0
    if n < best_count then best, best_count = c, n end
  end
  return best
end

local function all_users(key)
  local users = {}
  local flat = redis.call('HGETALL', key)
  for i = 2, #flat, 2 do
    local ok, p = pcall(cjson.decode, flat[i])
    if ok and type(p) == 'table' then users[#users + 1] = public_view(p) end
  end
  return users
end

local function check_presence_keys(keys, args, n)
  if #keys ~= 3 then return 'expects 3 keys: presence, seen, colors' end
  if #args < n then return 'expects ' .. n .. ' arguments' end
  if not tonumber(args[2]) then return 'now must be a number' end
  return nil
end

local function presence_fail(msg)
  return redis.error_reply('ERR rtsync_presence: ' .. msg)
end

local function presence_join(keys, args)
  local err = check_presence_keys(keys, args, 4)
  if err then return presence_fail(err) end
  local channel, now, conn = args[1], tonumber(args[2]), args[3]
  local ok, user = pcall(cjson.decode, args[4])
  if not ok or type(user) ~= 'table' or not is_id(user.userId) then
    return presence_fail('user must be a JSON object with a userId')
  end
  local p = load_presence(keys[1], user.userId)
  local status
  if p == nil then
    status = 'joined'
    p = { userId = user.userId, conns = {} }
    p.color = redis.call('HGET', keys[3], user.userId) or pick_color(keys[3])
  elseif #p.conns == 0 then
    status = 'reconnected'
  else
    status = 'present'
  end
  local seen = false
  for _, c in ipairs(p.conns) do if c == conn then seen = true end end
  if not seen then p.conns[#p.conns + 1] = conn end
  p.userName = user.userName
  p.avatarUrl = user.avatarUrl
  p.tableId = user.tableId
  p.viewId = user.viewId
  p.lastSeen = now
  p.leftAt = nil
  save_presence(keys, p)
  redis.call('HSET', keys[3], p.userId, p.color)
  if status == 'joined' then
    notify(channel, 'user_joined', public_view(p), conn)
  elseif status == 'reconnected' then
    notify(channel, 'user_reconnected', public_view(p), conn)
  end
  return cjson.encode({ status = status, color = p.color, users = all_users(keys[1]) })
end

local function presence_leave(keys, args)
  local err = check_presence_keys(keys, args, 4)
  if err then return presence_fail(err) end
  local now, conn, user = tonumber(args[2]), args[3], args[4]
  local p = load_presence(keys[1], user)
  if p == nil then return 0 end
  local rest = {}
  for _, c in ipairs(p.conns) do if c ~= conn then rest[#rest + 1] = c end end
  p.conns = rest
  if #rest == 0 then p.leftAt = now end
  redis.call('HSET', keys[1], p.userId, cjson.encode(p))
  return #rest
end

local function presence_expire(keys, args)
  local err = check_presence_keys(keys, args, 4)
  if err then return presence_fail(err) end
  local channel, now, user, grace = args[1], tonumber(args[2]), args[3], tonumber(args[4]) or 0
  local p = load_presence(keys[1], user)
  if p == nil or #p.conns > 0 or p.leftAt == nil or now - p.leftAt < grace then
    return 0
  end
  remove_presence(keys, channel, p)
  return 1
end

local function presence_touch(keys, args)
  local err = check_presence_keys(keys, args, 6)
  if err then return presence_fail(err) end
  local channel, now, conn, user, kind = args[1], tonumber(args[2]), args[3], args[4], args[5]
  local p = load_presence(keys[1], user)
  if p == nil then return 0 end
  p.lastSeen = now
  if kind == 'cursor' or kind == 'selection' then
    local ok, value = pcall(cjson.decode, args[6])
    if not ok then return presence_fail('value must be JSON') end
    p[kind] = value
    local data = { userId = p.userId, tableId = p.tableId }
    data[kind] = value
    notify(channel, kind == 'cursor' and 'cursor_position' or 'selection', data, conn)
  end
  save_presence(keys, p)
  return 1
end

local function presence_sweep(keys, args)
  local err = check_presence_keys(keys, args, 4)
  if err then return presence_fail(err) end
  local channel, now = args[1], tonumber(args[2])
  local ttl, grace = tonumber(args[3]) or 300000, tonumber(args[4]) or 3000
  local removed = 0
  local stale = redis.call('ZRANGEBYSCORE', keys[2], '-inf', '(' .. (now - ttl))
  for _, user in ipairs(stale) do
    local p = load_presence(keys[1], user) or { userId = user }
    remove_presence(keys, channel, p)
    removed = removed + 1
  end
  local flat = redis.call('HGETALL', keys[1])
  for i = 1, #flat, 2 do
    local p = load_presence(keys[1], flat[i])
    if p == nil then
      redis.call('HDEL', keys[1], flat[i])
    elseif #p.conns == 0 and p.leftAt ~= nil and now - p.leftAt >= grace then
      remove_presence(keys, channel, p)
      removed = removed + 1
    end
  end
  return removed
end

redis.register_function { function_name = 'rtsync_presence_join', callback = presence_join }
redis.register_function { function_name = 'rtsync_presence_leave', callback = presence_leave }
redis.register_function { function_name = 'rtsync_presence_expire', callback = presence_expire }
redis.register_function { function_name = 'rtsync_presence_touch', callback = presence_touch }
redis.register_function { function_name = 'rtsync_presence_sweep', callback = presence_sweep }

redis.register_function {
  function_name = 'rtsync_commit',
  callback = commit,
}
