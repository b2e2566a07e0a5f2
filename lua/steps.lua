
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

A step is one list element: a JSON head, a newline, then one cmsgpack
object per change of the step, concatenated (cmsgpack keeps every Lua
string byte for byte, so old values round-trip exactly and are never
decoded through cjson):
  head  {"id": "<step id>", "at": ms, "sealed": bool, "g": group | null,
         "n": changes, "recs": [{"r": "<recordId>", "f": ["<fieldId>"...]}]}
        one `recs` item per change (a record may repeat): what the sidecar
        reads (to declare the step's record keys in KEYS, each once, in
        order of first appearance, and check the user's write grants)
        without unpacking values, and what a commit reads to decide
        whether it joins the step (its fixed prefix only)
  body  per change {r = recordId, t = "create"|"update"|"delete"|"none",
         v = the record origin it produced, ov = before,
         f = {{f = fieldId, fv = the field origin it produced, ov = before,
               old = the stored text before, or nil}}}
Joining a step appends to its element (the head rewritten, the body
extended): no unpacking on the commit path. An undo folds the changes
into one entry per record (a field keeps the value it held before the
step's first change of it; create then delete undoes to nothing).
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
MAX_STEP_CHANGES changes and MAX_STEP_BYTES bytes; a commit that would
pass either starts a new step. Joining copies the whole element, so
MAX_STEP_BYTES is small (64 KiB): a small change never costs a copy of a
large step (a group whose old values pass it becomes several steps). A
step joined by time alone (no group named) stays within
MAX_WINDOW_STEP_BYTES (1 KiB, about 14 changes of short values):
interactive edits within 500 ms fit, and a writer committing hundreds of
changes a second pays a copy of at most 1 KiB per commit instead of 64
KiB. A join's cost grows with the step's bytes (each is read, rebuilt and
written back, and Lua's collector works in proportion to what a call
allocates): 649k Redis instructions per commit joining up to 4 KiB, 600k
up to 1 KiB, 566k never joining.
]==]

define('steps', { 'base' }, function(m)
local call, jstr = m.base.call, m.base.jstr
-- The globals used here, as locals bound at the library's first call
-- (base `bind`: a global is slower to look up).
local function globals()
  return type, tonumber, tostring, ipairs, pcall, cjson, cmsgpack, string, table, math
end
local type, tonumber, tostring, ipairs, pcall, cjson, cmsgpack, string, table, math
m.base.bind(function()
  type, tonumber, tostring, ipairs, pcall, cjson, cmsgpack, string, table, math = globals()
end)

local MAX_STEPS = 100
local JOIN_MS = 500
local MAX_STEP_CHANGES = 1000
local MAX_STEP_BYTES = 65536
-- A step joined only by time (no group named) stays smaller: a writer
-- committing hundreds of changes a second would otherwise copy a growing
-- element on every commit.
local MAX_WINDOW_STEP_BYTES = 1024
local MAX_GROUP = 128

local function now_ms()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A change's item of the head's `recs`.
local function head_item(e)
  local fs = {}
  for j, f in ipairs(e.f or {}) do fs[j] = jstr(f.f) end
  return '{"r":' .. jstr(e.r) .. ',"f":[' .. table.concat(fs, ',') .. ']}'
end

-- The head's fixed prefix, up to `"recs":[`.
local function head_prefix(id, at, sealed, g, n)
  local gj = 'null'
  if g ~= nil then gj = jstr(g) end
  return '{"id":' .. jstr(id) .. ',"at":' .. string.format('%d', tonumber(at) or 0)
    .. ',"sealed":' .. tostring(sealed == true) .. ',"g":' .. gj
    .. ',"n":' .. string.format('%d', n) .. ',"recs":['
end

-- A step (`recs`: its changes, or an undo's entries) as a stack element.
local function encode(step)
  local items, body = {}, {}
  for i, e in ipairs(step.recs) do
    items[i] = head_item(e)
    body[i] = cmsgpack.pack(e)
  end
  return head_prefix(step.id, step.at, step.sealed, step.g, #step.recs)
    .. table.concat(items, ',') .. ']}\n' .. table.concat(body)
end

-- Folds a step's changes into one entry per record, in order of first
-- appearance (see above).
local function fold(changes)
  local recs, by = {}, {}
  for _, e in ipairs(changes) do
    local m = by[e.r]
    if m == nil then
      m = { r = e.r, ov = e.ov, f = {} }
      by[e.r] = m
      recs[#recs + 1] = m
    end
    if e.t == 'create' then
      m.t, m.f = 'create', {}
    elseif e.t == 'delete' then
      if m.t == 'create' then m.t = 'none' else m.t = 'delete' end
    elseif e.t == 'none' then
      m.t = 'none'
    elseif m.t == nil then
      m.t = 'update'
    end
    m.v = e.v
    if e.t == 'update' and m.t == 'update' then
      for _, fe in ipairs(e.f or {}) do
        local have
        for _, x in ipairs(m.f) do
          if x.f == fe.f then have = x end
        end
        if have then
          have.fv = fe.fv
        else
          m.f[#m.f + 1] = { f = fe.f, fv = fe.fv, ov = fe.ov, old = fe.old }
        end
      end
    end
  end
  return recs
end

-- A stack element as a step {id, recs = one entry per record}, or nil
-- when it is not one.
local function decode(raw)
  if type(raw) ~= 'string' then return nil end
  local nl = raw:find('\n', 1, true)
  if not nl then return nil end
  local okh, head = pcall(cjson.decode, raw:sub(1, nl - 1))
  if not okh or type(head) ~= 'table' or type(head.id) ~= 'string' then return nil end
  local unpacked = { pcall(cmsgpack.unpack, raw:sub(nl + 1)) }
  if not table.remove(unpacked, 1) then return nil end
  for _, e in ipairs(unpacked) do
    if type(e) ~= 'table' or type(e.r) ~= 'string' then return nil end
    if type(e.f) ~= 'table' then e.f = {} end
  end
  return { id = head.id, recs = fold(unpacked) }
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
-- `read`, when given, is what the commit already read of the record
-- (`{v, u, fields = {[fieldId] = {d:, v:, u:}}}`, see commit.lua read_head),
-- so nothing is read twice.
local function prior(state, change, changes, read)
  local head = read and { read.v, read.u } or call('HMGET', state, '_v', '_u')
  local out = { origin = origin(head[1], head[2]), fields = {} }
  if change.type ~= 'update' then return out end
  for _, c in ipairs(changes or {}) do
    local f = c.fieldId
    if out.fields[f] == nil then
      local got = read and read.fields[f] or call('HMGET', state, 'd:' .. f, 'v:' .. f, 'u:' .. f)
      out.fields[f] = { text = got[1], version = tonumber(got[2]) or 0, origin = origin(got[2], got[3]) }
    end
  end
  return out
end

-- One commit as a step's change (see "body").
local function change_entry(change, new_v, before, changes)
  local e = { r = change.entityId, t = change.type, v = new_v, ov = before.origin, f = {} }
  if change.type ~= 'update' then return e end
  local seen = {}
  for _, c in ipairs(changes or {}) do
    if not seen[c.fieldId] then
      seen[c.fieldId] = true
      local p = before.fields[c.fieldId] or {}
      e.f[#e.f + 1] = { f = c.fieldId, fv = new_v, ov = p.origin or 0, old = p.text or nil }
    end
  end
  return e
end

-- The top element joined with `entry`, if this commit joins it (see
-- "Grouping"): decided from the head's prefix, and built by appending,
-- so a step is never unpacked here.
local function joined(undo, group, now, entry)
  local raw = call('LINDEX', undo, 0)
  if type(raw) ~= 'string' then return nil end
  local id, at, sealed, gpos = raw:match('^{"id":"([^"\\]*)","at":(%d+),"sealed":(%a+),"g":()')
  if id == nil or sealed ~= 'false' then return nil end
  local want = 'null'
  if group ~= nil then
    want = jstr(group)
  elseif now - tonumber(at) > JOIN_MS then
    return nil
  end
  local npos = gpos + #want
  if raw:sub(gpos, npos + 4) ~= want .. ',"n":' then return nil end
  local n, rpos = raw:match('^(%d+),"recs":%[()', npos + 5)
  local nl = raw:find('\n', 1, true)
  if n == nil or nl == nil or tonumber(n) >= MAX_STEP_CHANGES then return nil end
  local text = head_prefix(id, at, false, group, tonumber(n) + 1) .. raw:sub(rpos, nl - 3)
    .. ',' .. head_item(entry) .. ']}\n' .. raw:sub(nl + 1) .. cmsgpack.pack(entry)
  local most = MAX_STEP_BYTES
  if group == nil then most = MAX_WINDOW_STEP_BYTES end
  if #text > most then return nil end
  return text
end

-- Records a committed record change (event `id`, new version `new_v`) as
-- a step of its user: joins the top step or pushes a new one; clears the
-- redo stack. `now` (ms) is the commit's time when the caller has it.
local function record(undo, redo, change, new_v, before, changes, id, retention_ms, now)
  now = now or now_ms()
  local group = change.undoGroup
  if type(group) ~= 'string' or #group == 0 or #group > MAX_GROUP then group = nil end
  local entry = change_entry(change, new_v, before, changes)
  local text = joined(undo, group, now, entry)
  if text then
    call('LSET', undo, 0, text)
    call('PEXPIRE', undo, retention_ms)
  else
    push(undo, { id = id, at = now, g = group, recs = { entry } }, retention_ms)
  end
  call('DEL', redo)
end

return {
  prior = prior, record = record, decode = decode, push = push, now_ms = now_ms,
  origin = origin,
}
end)
