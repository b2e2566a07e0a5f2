
--[==[
steps: the undo and redo stacks of one user on one table (v1.3,
docs/protocol.md 3.3). rtsync_commit records a step here when the sidecar
passes the stacks (a change made by a connection's user); rtsync_undo
(lua/undo.lua) pops a step from one stack and pushes its inverse onto the
other.

Keys (both in the table's slot, built by src/store/keys.rs):
  `<p>:{T}:undo:<len(userId)>:<userId>`  list, newest step first
  `<p>:{T}:redo:<len(userId)>:<userId>`  list, newest step first
Each stack holds at most MAX_STEPS (100) steps and expires after the
stream's retention (refreshed by every push): a step older than the
stream's history is dropped with it. A new change by the user clears the
redo stack.

A step is one list element: a JSON head, a newline, then the whole step
packed with cmsgpack (which keeps every Lua string byte for byte, so old
values round-trip exactly and are never decoded through cjson):
  head  {"id": "<step id>", "recs": [{"r": "<recordId>", "f": ["<fieldId>"...]}]}
        what the sidecar reads (to declare the step's record keys in
        KEYS and check the user's write grants) without unpacking values
  body  {id, at = ms, g = group or nil, sealed = true or nil,
         recs = {{r = recordId, t = "create"|"update"|"delete"|"none",
                  v = the record origin the step produced, ov = before,
                  f = {{f = fieldId, fv = the field origin the step
                        produced, ov = before, old = the stored text
                        before, or nil}}}}}
The step id is the stream id of the step's first event.

Origins. An undo writes old values back as a new change (a new version),
so a step checked against plain versions would always find the fields of
the step below it "changed since" by the undo itself. So each entry and
field keeps, besides `v`/`fv` (the origin its step produced), `ov`: the
origin it held before. A field's origin is its version (`v:<f>`) unless
an undo or redo restored it: then the record hash holds `u:<f>` =
"<version>:<origin>" (the origin of the value written back, valid while
the field is still at that version); a record's is `_v` unless `_u` =
"<version>:<origin>" says so. A step is revertible where the origin is
still the one it produced; anyone else's change makes a new origin.

Grouping. A commit joins the top step instead of pushing a new one when
the top is not sealed (undo/redo inverses are) and either both name the
same group (`undoGroup` in the change header: the client's
metadata.undoGroup, or one offline batch) or neither names one and the
top step started at most JOIN_MS (500 ms) ago. A joined step stays within
MAX_STEP_RECORDS records and MAX_STEP_BYTES bytes; a commit that would
pass either starts a new step. Within a step one entry per record: a
field keeps the value it held before the step's first change of it.
]==]

define('steps', { 'base' }, function(m)
local call, jstr = m.base.call, m.base.jstr

local MAX_STEPS = 100
local JOIN_MS = 500
local MAX_STEP_RECORDS = 1000
local MAX_STEP_BYTES = 1048576

local function now_ms()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The head the sidecar reads (see above).
local function head_of(step)
  local recs = {}
  for i, r in ipairs(step.recs) do
    local fs = {}
    for j, f in ipairs(r.f) do fs[j] = jstr(f.f) end
    recs[i] = '{"r":' .. jstr(r.r) .. ',"f":[' .. table.concat(fs, ',') .. ']}'
  end
  return '{"id":' .. jstr(step.id) .. ',"recs":[' .. table.concat(recs, ',') .. ']}'
end

local function encode(step)
  return head_of(step) .. '\n' .. cmsgpack.pack(step)
end

-- A stack element as a step, or nil when it is not one.
local function decode(raw)
  if type(raw) ~= 'string' then return nil end
  local nl = raw:find('\n', 1, true)
  if not nl then return nil end
  local ok, step = pcall(cmsgpack.unpack, raw:sub(nl + 1))
  if not ok or type(step) ~= 'table' or type(step.recs) ~= 'table' or type(step.id) ~= 'string' then
    return nil
  end
  for _, r in ipairs(step.recs) do
    if type(r.f) ~= 'table' then r.f = {} end
  end
  return step
end

-- Pushes `step` onto `stack`, capped and expiring with the stream.
local function push(stack, step, retention_ms)
  call('LPUSH', stack, encode(step))
  call('LTRIM', stack, 0, MAX_STEPS - 1)
  call('PEXPIRE', stack, retention_ms)
end

-- The origin of a version `v` (see "Origins"): the marker's origin when
-- the marker ("<version>:<origin>") was written at `v`, else `v`.
local function origin(v, marker)
  v = tonumber(v) or 0
  if type(marker) == 'string' then
    local at, o = marker:match('^(%d+):(%d+)$')
    if tonumber(at) == v then return tonumber(o) end
  end
  return v
end

-- What a change's record and (for an update) fields held before it:
-- {origin = the record's origin, fields = {[fieldId] = {text = the
-- stored text or false, version = the field's version or 0, origin}}}.
local function prior(state, change, changes)
  local head = call('HMGET', state, '_v', '_u')
  local out = { origin = origin(head[1], head[2]), fields = {} }
  if change.type ~= 'update' then return out end
  for _, c in ipairs(changes or {}) do
    local f = c.fieldId
    if out.fields[f] == nil then
      local got = call('HMGET', state, 'd:' .. f, 'v:' .. f, 'u:' .. f)
      out.fields[f] = { text = got[1], version = tonumber(got[2]) or 0, origin = origin(got[2], got[3]) }
    end
  end
  return out
end

local function entry_for(step, record_id)
  for _, r in ipairs(step.recs) do
    if r.r == record_id then return r end
  end
  return nil
end

-- Folds one commit into a step's entry for its record.
local function merge(entry, change, new_v, before, changes)
  local t = change.type
  if entry.ov == nil then entry.ov = before.origin end
  if t == 'create' then
    entry.t, entry.f = 'create', {}
  elseif t == 'delete' then
    -- Created and deleted within one step: undoing it changes nothing.
    if entry.t == 'create' then entry.t = 'none' else entry.t = 'delete' end
  elseif entry.t == nil then
    entry.t = 'update'
  end
  entry.v = new_v
  if t ~= 'update' or entry.t ~= 'update' then return end
  local seen = {}
  for _, fe in ipairs(entry.f) do seen[fe.f] = fe end
  for _, c in ipairs(changes or {}) do
    local fe = seen[c.fieldId]
    if fe then
      fe.fv = new_v
    else
      local p = before.fields[c.fieldId] or {}
      fe = { f = c.fieldId, fv = new_v, ov = p.origin or 0, old = p.text or nil }
      entry.f[#entry.f + 1] = fe
      seen[c.fieldId] = fe
    end
  end
end

-- The top step, if this commit joins it (see "Grouping").
local function joinable(undo, group, now)
  local top = decode(call('LINDEX', undo, 0))
  if top == nil or top.sealed then return nil end
  if group ~= nil then
    if top.g == group then return top end
    return nil
  end
  if top.g == nil and now - (tonumber(top.at) or 0) <= JOIN_MS then return top end
  return nil
end

-- Records a committed record change (event `id`, new version `new_v`) as
-- a step of its user: joins the top step or pushes a new one; clears the
-- redo stack.
local function record(undo, redo, change, new_v, before, changes, id, retention_ms)
  local now = now_ms()
  local group = change.undoGroup
  if type(group) ~= 'string' then group = nil end
  local top = joinable(undo, group, now)
  if top ~= nil then
    local entry = entry_for(top, change.entityId)
    if entry == nil then
      entry = { r = change.entityId, f = {} }
      top.recs[#top.recs + 1] = entry
    end
    merge(entry, change, new_v, before, changes)
    local text = encode(top)
    if #top.recs <= MAX_STEP_RECORDS and #text <= MAX_STEP_BYTES then
      call('LSET', undo, 0, text)
      call('PEXPIRE', undo, retention_ms)
      call('DEL', redo)
      return
    end
  end
  local entry = { r = change.entityId, f = {} }
  merge(entry, change, new_v, before, changes)
  push(undo, { id = id, at = now, g = group, recs = { entry } }, retention_ms)
  call('DEL', redo)
end

return {
  prior = prior, record = record, decode = decode, push = push, now_ms = now_ms,
  origin = origin,
}
end)
