--[[
Presence: who is on a table, their cursors and selections, and colors.

KEYS (all functions)  1 presence `<p>:{T}:presence` (hash userId -> JSON)
                      2 seen     `<p>:{T}:seen`     (zset userId -> last seen ms)
                      3 colors   `<p>:{T}:colors`   (hash userId -> color)
Notices go to the sharded channel given as ARGV (`<p>:{T}:presence`) as JSON
{"event", "data", "origin"}: events user_joined, user_reconnected,
user_left, cursor_position, selection, user_editing, user_viewport. `origin` is the connection that
caused it (receivers skip it).

rtsync_presence_join   ARGV channel, now, connId, user JSON {userId, userName,
                       avatarUrl?, tableId, viewId}
  -> JSON {status: "joined"|"reconnected"|"present", color, users: [UserPresence]}
                       (v1.3: viewports only while the users' stored
                       presence stays within 256 KiB, see all_users)
rtsync_presence_leave  ARGV channel, now, connId, userId
  -> remaining connection count; at 0 the presence stays for the grace period
rtsync_presence_expire ARGV channel, now, userId, graceMs
  -> 1 if the user (no connections, left more than graceMs ago) was removed
rtsync_presence_touch  ARGV channel, now, connId, userId, kind ("heartbeat"|
                       "cursor"|"selection"|"editing"|"viewport"), value JSON
  -> 1, or 0 when the user has no presence (the caller joins again)
                       v1.3 editing: value {recordId, fieldId, state:
                       "start"|"stop", ttlMs}; a start sets the user's one
                       editing cell on the table (held by connId, until
                       now + ttlMs), publishing a stop of the cell it
                       replaces first; a stop clears it when it names that
                       cell; either is published as user_editing {userId,
                       color, tableId, recordId, fieldId, state}.
                       viewport: value {viewId?, recordIds? | firstRecordId,
                       lastRecordId}, kept and published as user_viewport
                       {userId, tableId, viewport}. Neither is published
                       while the user is alone on the table (one user, one
                       connection): no one would receive it.
rtsync_presence_editing_expire ARGV channel, now, userId
  -> 1 when the user's editing cell was due (not renewed) and was ended,
     with user_editing state "stop"; else 0
rtsync_presence_sweep  ARGV channel, now, ttlMs, graceMs
  -> number of users removed (stale for ttlMs, or gone for graceMs)
rtsync_presence_prune  ARGV channel, now, conns JSON array
  -> number of connections removed. The connections are those of a sidecar
     that stopped announcing itself (killed): a user left with none is
     removed at once with user_left (the sidecar's silence was the grace).
]]

define('presence', { 'base' }, function(m)
local INVALID, is_id = m.base.INVALID, m.base.is_id
local call, register = m.base.call, m.base.register

local PALETTE = {
  '#E6194B', '#3CB44B', '#4363D8', '#F58231', '#911EB4', '#42D4F4',
  '#F032E6', '#BFEF45', '#469990', '#9A6324', '#800000', '#000075',
  '#808000', '#FFD8B1', '#AAFFC3', '#DCBEFF',
}

-- The editing cell as others see it (v1.3), or nil once it is due.
local function editing_view(p, now)
  local e = p.editing
  if type(e) ~= 'table' or (tonumber(e.expiresAt) or 0) <= now then return nil end
  return { recordId = e.recordId, fieldId = e.fieldId }
end

local function public_view(p, now)
  return {
    userId = p.userId, userName = p.userName, avatarUrl = p.avatarUrl,
    tableId = p.tableId, viewId = p.viewId, cursor = p.cursor,
    selection = p.selection, lastSeen = p.lastSeen, color = p.color,
    editing = editing_view(p, now or 0), viewport = p.viewport,
  }
end

local function notify(channel, event, data, origin)
  call('SPUBLISH', channel, cjson.encode({ event = event, data = data, origin = origin }))
end

local function load_presence(key, user)
  local raw = call('HGET', key, user)
  if not raw then return nil end
  local ok, p = pcall(cjson.decode, raw)
  if not ok or type(p) ~= 'table' then return nil end
  if type(p.conns) ~= 'table' then p.conns = {} end
  return p
end

local function save_presence(keys, p)
  call('HSET', keys[1], p.userId, cjson.encode(p))
  call('ZADD', keys[2], p.lastSeen, p.userId)
end

local function remove_presence(keys, channel, p)
  call('HDEL', keys[1], p.userId)
  call('ZREM', keys[2], p.userId)
  call('HDEL', keys[3], p.userId)
  notify(channel, 'user_left', { userId = p.userId, tableId = p.tableId }, cjson.null)
end

local function pick_color(colors_key)
  local used = {}
  local flat = call('HGETALL', colors_key)
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

-- Bytes of stored presence whose viewports table_users carries (v1.3).
-- A viewport is up to 16 KiB of ids: with a thousand users every join
-- would answer (and this function build) megabytes. Past the budget a
-- user is listed without `viewport`; their next user_viewport brings it.
local USERS_VIEWPORT_BUDGET = 256 * 1024

local function all_users(key, now)
  local users, used = {}, 0
  local flat = call('HGETALL', key)
  for i = 2, #flat, 2 do
    local ok, p = pcall(cjson.decode, flat[i])
    if ok and type(p) == 'table' then
      local view = public_view(p, now)
      used = used + #flat[i]
      if used > USERS_VIEWPORT_BUDGET then view.viewport = nil end
      users[#users + 1] = view
    end
  end
  return users
end

-- Whether `p` is alone on the table: one user, at most one connection.
local function alone(keys, p)
  return #p.conns <= 1 and call('HLEN', keys[1]) <= 1
end

-- Publishes `p`'s editing of a cell in `state` (v1.3).
local function notify_editing(channel, p, cell, state, origin)
  notify(channel, 'user_editing', {
    userId = p.userId, color = p.color, tableId = p.tableId,
    recordId = cell.recordId, fieldId = cell.fieldId, state = state,
  }, origin)
end

-- Ends `p`'s editing cell (not saved); published unless no one is left
-- to receive it.
local function end_editing(keys, channel, p, origin)
  local cell = p.editing
  p.editing = nil
  if type(cell) == 'table' and call('HLEN', keys[1]) > 1 then
    notify_editing(channel, p, cell, 'stop', origin)
  end
end

-- v1.3: an editing start or stop of `conn`; false and an error text when
-- the value is not one.
local function touch_editing(keys, channel, now, conn, p, raw)
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' or not is_id(v.recordId) or not is_id(v.fieldId) then
    return false, 'editing value must be {recordId, fieldId, state, ttlMs}'
  end
  local cell = { recordId = v.recordId, fieldId = v.fieldId }
  local quiet = alone(keys, p)
  if v.state == 'start' then
    local ttl = tonumber(v.ttlMs) or 5000
    local e = p.editing
    -- Moving to another cell first ends the previous one: a receiver the
    -- new start is masked or viewport-filtered from would otherwise keep
    -- showing the old cell (a stop always reaches it, a start may not).
    if not quiet and type(e) == 'table' and (e.recordId ~= cell.recordId or e.fieldId ~= cell.fieldId) then
      notify_editing(channel, p, e, 'stop', conn)
    end
    p.editing = { recordId = cell.recordId, fieldId = cell.fieldId, conn = conn, expiresAt = now + ttl }
  elseif v.state == 'stop' then
    local e = p.editing
    if type(e) == 'table' and e.recordId == cell.recordId and e.fieldId == cell.fieldId then
      p.editing = nil
    end
  else
    return false, 'editing state must be start or stop'
  end
  if not quiet then notify_editing(channel, p, cell, v.state, conn) end
  return true
end

-- v1.3: the rows a user sees, kept for table_users and published.
local function touch_viewport(keys, channel, conn, p, raw)
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' then return false, 'viewport value must be a JSON object' end
  p.viewport = v
  if not alone(keys, p) then
    notify(channel, 'user_viewport', { userId = p.userId, tableId = p.tableId, viewport = v }, conn)
  end
  return true
end

local function check_presence_keys(keys, args, n)
  if #keys ~= 3 then return 'expects 3 keys: presence, seen, colors' end
  if #args < n then return 'expects ' .. n .. ' arguments' end
  if not tonumber(args[2]) then return 'now must be a number' end
  return nil
end

local function presence_fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_presence: ' .. msg)
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
    p.color = call('HGET', keys[3], user.userId) or pick_color(keys[3])
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
  call('HSET', keys[3], p.userId, p.color)
  if status == 'joined' then
    notify(channel, 'user_joined', public_view(p, now), conn)
  elseif status == 'reconnected' then
    notify(channel, 'user_reconnected', public_view(p, now), conn)
  end
  return cjson.encode({ status = status, color = p.color, users = all_users(keys[1], now) })
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
  if type(p.editing) == 'table' and p.editing.conn == conn then
    end_editing(keys, args[1], p, conn)
  end
  call('HSET', keys[1], p.userId, cjson.encode(p))
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
  elseif kind == 'editing' then
    local ok, why = touch_editing(keys, channel, now, conn, p, args[6])
    if not ok then return presence_fail(why) end
  elseif kind == 'viewport' then
    local ok, why = touch_viewport(keys, channel, conn, p, args[6])
    if not ok then return presence_fail(why) end
  end
  save_presence(keys, p)
  return 1
end

local function presence_editing_expire(keys, args)
  local err = check_presence_keys(keys, args, 3)
  if err then return presence_fail(err) end
  local channel, now, user = args[1], tonumber(args[2]), args[3]
  local p = load_presence(keys[1], user)
  if p == nil or type(p.editing) ~= 'table' or editing_view(p, now) ~= nil then return 0 end
  end_editing(keys, channel, p, cjson.null)
  call('HSET', keys[1], p.userId, cjson.encode(p))
  return 1
end

local function presence_sweep(keys, args)
  local err = check_presence_keys(keys, args, 4)
  if err then return presence_fail(err) end
  local channel, now = args[1], tonumber(args[2])
  local ttl, grace = tonumber(args[3]) or 300000, tonumber(args[4]) or 3000
  local removed = 0
  local stale = call('ZRANGEBYSCORE', keys[2], '-inf', '(' .. (now - ttl))
  for _, user in ipairs(stale) do
    local p = load_presence(keys[1], user) or { userId = user }
    remove_presence(keys, channel, p)
    removed = removed + 1
  end
  local flat = call('HGETALL', keys[1])
  for i = 1, #flat, 2 do
    local p = load_presence(keys[1], flat[i])
    if p == nil then
      call('HDEL', keys[1], flat[i])
    elseif #p.conns == 0 and p.leftAt ~= nil and now - p.leftAt >= grace then
      remove_presence(keys, channel, p)
      removed = removed + 1
    elseif type(p.editing) == 'table' and editing_view(p, now) == nil then
      -- Its sidecar could not end it (gone): the sweeper does.
      end_editing(keys, channel, p, cjson.null)
      call('HSET', keys[1], p.userId, cjson.encode(p))
    end
  end
  return removed
end

register('rtsync_presence_join', presence_join)
register('rtsync_presence_leave', presence_leave)
register('rtsync_presence_expire', presence_expire)
register('rtsync_presence_touch', presence_touch)
register('rtsync_presence_sweep', presence_sweep)
register('rtsync_presence_editing_expire', presence_editing_expire)

local function presence_prune(keys, args)
  local err = check_presence_keys(keys, args, 3)
  if err then return presence_fail(err) end
  local channel = args[1]
  local ok, gone = pcall(cjson.decode, args[3])
  if not ok or type(gone) ~= 'table' then return presence_fail('conns must be a JSON array') end
  local dead = {}
  for _, c in ipairs(gone) do dead[c] = true end
  local removed = 0
  local flat = call('HGETALL', keys[1])
  for i = 1, #flat, 2 do
    local p = load_presence(keys[1], flat[i])
    if p ~= nil then
      local rest = {}
      for _, c in ipairs(p.conns) do
        if dead[c] then removed = removed + 1 else rest[#rest + 1] = c end
      end
      if #rest < #p.conns then
        if #rest == 0 then
          remove_presence(keys, channel, p)
        else
          p.conns = rest
          if type(p.editing) == 'table' and dead[p.editing.conn] then
            end_editing(keys, channel, p, cjson.null)
          end
          call('HSET', keys[1], p.userId, cjson.encode(p))
        end
      end
    end
  end
  return removed
end

register('rtsync_presence_prune', presence_prune)
end)
