
--[==[
rtsync_undo: undo or redo the user's latest step on a table (v1.3,
docs/protocol.md 3.3). The stacks and the step's layout are lua/steps.lua.

FCALL rtsync_undo <numkeys> <from> <to> <stream> <records> <sink-floor>
                  <doorbell> <rec 1>..<rec n> [<dedup>] <header> <retentionMs>

KEYS
  1 from       the stack the step is taken from: the user's undo stack for
               an undo, its redo stack for a redo
  2 to         the other stack: the step's inverse is pushed there
  3 stream     `<p>:{T}:events`
  4 records    `<p>:{T}:records` (declared for symmetry with a commit; an
               undo writes records that exist already)
  5 sink floor `<p>:{T}:sink-floor`, read only
  6 doorbell   the sharded channel `<p>:{T}:presence`
  7..6+2n      per record of the top step, in the step's order (the head's
               `recs`, each record once, which the sidecar read first): its
               hash `<p>:{T}:rec:<recordId>`, then its history index
               `<p>:{T}:rh:<recordId>` (lua/commit.lua, "History index")
  last         the dedup key `<p>:{T}:cc:<len(userId)>:<userId>:<clientChangeId>`
               when the header has a clientChangeId (the same key space as
               rtsync_commit's: one clientChangeId, one answer)
ARGV
  1 header     JSON object {"op": "undo"|"redo", "stepId": the id of the
               step the caller read ("" for an empty stack), "userId",
               "tableId", "baseId"?, "origin"?, "clientChangeId"?,
               "maxRecordBytes"?, "answerBytes"?, "recordHistory"?,
               "maxEventBytes"?, "hiddenFields"? | "readableFields"?} (the
               last six as in rtsync_commit: an update's event whose old
               values would pass maxEventBytes leaves them out, each
               marked "oldValueOmitted": true)
  2 retention  milliseconds of history to keep (the stacks expire with it)

What it does. When the top of `from` is not the step `stepId` (another
connection of the user undid or changed meanwhile) it answers
{"status":"stale","stepId"} and writes nothing: the caller reads the top
again and retries. Otherwise it pops the step and, per record:
  update  writes each field's old value back where the field's version is
          still the one the step produced; other fields are skipped
  create  deletes the record if nobody changed it since (its version is
          the one the step produced); else skips it
  delete  undeletes the record if it is still deleted at the version the
          step produced (the tombstone cleared, its fields as they were);
          its event is a `create` carrying every field, metadata.undelete
Whether nobody changed a field or record since is decided by its origin
(lua/steps.lua, "Origins"), so steps undo one after another and redo
undoes an undo exactly.
Each record written is one commit: one stream entry (metadata
{"undoOf": stepId}, or {"redoOf": stepId} for a redo), version +1, the
doorbell rung, its id pushed on the record's history index; the
record's writer per field (`w:`) is the user. Its `changes` carry, like a
commit's, the stored value before (`oldValue`) and the field's version
before (`oldVersion`). The
inverse of what was written becomes one (sealed) step on `to`, whose id is
the id of its first event. A step that wrote nothing pushes nothing; it is
popped all the same (its changes were overwritten by others).

RETURNS a JSON string:
  {"status": "applied" | "partial" (some skipped) | "conflict" (all
   skipped) | "nothing" (empty stack) | "stale" | "duplicate",
   "undone" | "redone": stepId, "eventId"?: the last event written,
   "version": that record's new version (or the record's current one),
   "events": [{"recordId", "eventId", "version", "type": "update" |
               "delete" | "create" (an undelete)}],
   "skipped": [{"recordId", "fieldId"?, "reason": "changed" | "deleted" |
                "exists" | "too_large", "theirValue"?, "by"?}],
   "truncated"?: true}
A skipped field the reader may not read has no theirValue and no by;
theirValue (the stored value now) is bounded by answerBytes like a
commit's conflicts. A resend with the same clientChangeId answers the
first status, ids and version as "duplicate" ("originalStatus").
]==]

define('undo', { 'base', 'commit', 'steps' }, function(m)
local INVALID = m.base.INVALID
local is_id, jstr, jint = m.base.is_id, m.base.jstr, m.base.jint
local call, register = m.base.call, m.base.register
local C, S = m.commit, m.steps
local value_json, readable_by, field_set = C.value_json, C.readable_by, C.field_set

local DEDUP_TTL_SECS = 86400
local MAX_VERSION = 9007199254740991
local FIXED_KEYS = 6
-- A stream entry's bytes besides its changes and metadata (lua/commit.lua).
local EVENT_OVERHEAD = 512

local function fail(msg)
  return redis.error_reply(INVALID .. 'rtsync_undo: ' .. msg)
end

local function optional_id(h, name)
  if h[name] == cjson.null then h[name] = nil end
  if h[name] ~= nil and not is_id(h[name]) then return name .. ' must be an id' end
  return nil
end

-- The header's rules (see ARGV); nil, or what is wrong.
local function check_header(h)
  if h.op ~= 'undo' and h.op ~= 'redo' then return 'op must be undo or redo' end
  if type(h.stepId) ~= 'string' or #h.stepId > 64 then return 'stepId must be a step id' end
  if not is_id(h.userId) then return 'userId must be an id' end
  if not is_id(h.tableId) then return 'tableId must be an id' end
  for _, name in ipairs({ 'baseId', 'origin' }) do
    local bad = optional_id(h, name)
    if bad then return bad end
  end
  local cc = h.clientChangeId
  if cc == cjson.null then h.clientChangeId, cc = nil, nil end
  if cc ~= nil and (type(cc) ~= 'string' or #cc < 1 or #cc > 128) then
    return 'clientChangeId must be a string of 1..128 bytes'
  end
  local cap = h.recordHistory
  if cap == nil or cap == cjson.null then
    h.recordHistory = 100
  elseif type(cap) ~= 'number' or cap < 1 or cap > 10000 or cap ~= math.floor(cap) then
    return 'recordHistory must be an integer in 1..10000'
  end
  local me = h.maxEventBytes
  if me == cjson.null then h.maxEventBytes, me = nil, nil end
  if me ~= nil and (type(me) ~= 'number' or me < 1 or me ~= math.floor(me)) then
    return 'maxEventBytes must be a positive integer'
  end
  for _, limit in ipairs({ { 'maxRecordBytes', 4194304 }, { 'answerBytes', 1048576 } }) do
    local n = h[limit[1]]
    if n == nil or n == cjson.null then
      h[limit[1]] = limit[2]
    elseif type(n) ~= 'number' or n < 0 or n ~= math.floor(n) then
      return limit[1] .. ' must be a non-negative integer'
    end
  end
  local hide, herr = field_set(h.hiddenFields, 'hiddenFields')
  if herr then return herr end
  local only, oerr = field_set(h.readableFields, 'readableFields')
  if oerr then return oerr end
  if hide and only then return 'hiddenFields and readableFields cannot both be given' end
  if hide then h.reader = { hide = hide } end
  if only then h.reader = { only = only } end
  return nil
end

-- Reports a record (or one of its fields) left as it is.
local function skip(ctx, state, record_id, f, reason)
  local out = '{"recordId":' .. jstr(record_id)
  if f then out = out .. ',"fieldId":' .. jstr(f) end
  out = out .. ',"reason":"' .. reason .. '"'
  if f and readable_by(ctx.h.reader, f) then
    local by = call('HGET', state, 'w:' .. f)
    if by then out = out .. ',"by":' .. jstr(by) end
    local len = call('HSTRLEN', state, 'd:' .. f)
    if ctx.used + #f + len <= ctx.h.answerBytes then
      ctx.used = ctx.used + #f + len
      out = out .. ',"theirValue":' .. value_json(call('HGET', state, 'd:' .. f))
    else
      ctx.truncated = true
    end
  end
  ctx.skipped[#ctx.skipped + 1] = out .. '}'
end

-- The step's fields of record `r` still at the origin the step produced
-- ({f, old, cur, fv, ov}; lua/steps.lua, "Origins"); the others are
-- skipped. Also whether none was skipped.
local function revertible(ctx, r, state)
  local todo, all = {}, true
  for _, fe in ipairs(r.f) do
    local got = call('HMGET', state, 'v:' .. fe.f, 'u:' .. fe.f, 'd:' .. fe.f)
    if S.origin(got[1], got[2]) == tonumber(fe.fv) then
      todo[#todo + 1] = {
        f = fe.f, old = fe.old, cur = got[3] or nil, fv = fe.fv, ov = fe.ov or 0, ver = tonumber(got[1]) or 0,
      }
    else
      all = false
      skip(ctx, state, r.r, fe.f, 'changed')
    end
  end
  return todo, all
end

-- The state's size with `todo` written (see commit.lua's `_b`).
local function size_after(state, todo)
  local b = C.state_bytes(state)
  for _, t in ipairs(todo) do
    if t.cur then b = b - #t.f - #t.cur end
    if t.old then b = b + #t.f + #t.old end
  end
  return b
end

-- The event's `changes` for `todo`: the stored value now as oldValue, the
-- value written back as newValue (null: the field's value is removed);
-- with `omit`, each oldValue left out and marked "oldValueOmitted".
local function changes_text(todo, omit)
  local parts = {}
  for i, t in ipairs(todo) do
    local p = '{"fieldId":' .. jstr(t.f)
    if t.cur and omit then p = p .. ',"oldValueOmitted":true' end
    if t.cur and not omit then p = p .. ',"oldValue":' .. value_json(t.cur) end
    p = p .. ',"oldVersion":' .. jint(t.ver or 0)
    if t.old then p = p .. ',"newValue":' .. value_json(t.old) else p = p .. ',"newValue":null' end
    parts[i] = p .. '}'
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

-- changes_text within the header's maxEventBytes (less the rest of
-- the entry, as rtsync_commit counts it): old values are left out when
-- they would not fit, so every subscriber can be sent the event.
local function changes_of(ctx, todo)
  local text = changes_text(todo, false)
  local me = ctx.h.maxEventBytes
  if me and #text > me - EVENT_OVERHEAD - #ctx.metadata then
    return changes_text(todo, true)
  end
  return text
end

-- Writes `todo` back at version `new_v`, each field marked as holding
-- the origin it had before the step; the inverse step's fields.
local function write_fields(ctx, state, todo, new_v, extra)
  local writes = { 'HSET', state, '_v', jint(new_v) }
  for _, w in ipairs(extra or {}) do writes[#writes + 1] = w end
  local removed, inverse = {}, {}
  for _, t in ipairs(todo) do
    writes[#writes + 1] = 'v:' .. t.f
    writes[#writes + 1] = jint(new_v)
    writes[#writes + 1] = 'w:' .. t.f
    writes[#writes + 1] = ctx.h.userId
    writes[#writes + 1] = 'u:' .. t.f
    writes[#writes + 1] = jint(new_v) .. ':' .. jint(t.ov)
    if t.old then
      writes[#writes + 1] = 'd:' .. t.f
      writes[#writes + 1] = t.old
    else
      removed[#removed + 1] = 'd:' .. t.f
    end
    inverse[#inverse + 1] = { f = t.f, fv = t.ov, ov = t.fv, old = t.cur }
  end
  call(unpack(writes))
  if #removed > 0 then call('HDEL', state, unpack(removed)) end
  return inverse
end

-- One stream entry for record `r` (the first write of its commit), and
-- its id on the record's history index.
local function emit(ctx, r, kind, new_v, changes, metadata)
  local change = {
    type = kind, entityType = 'record', entityId = r.r, userId = ctx.h.userId,
    baseId = ctx.h.baseId, tableId = ctx.h.tableId, origin = ctx.h.origin,
  }
  local id, min_id, now_ms = C.append(ctx.commit_keys, change, new_v, changes, metadata or ctx.metadata, ctx.retention_ms)
  C.index_append(r.index, id, ctx.h.recordHistory, min_id, math.max(now_ms - min_id, 1))
  ctx.events[#ctx.events + 1] = { r = r.r, id = id, v = new_v, kind = kind }
  return id
end

-- The record's marker after a revert: its origin is the step's `ov` when
-- every field of the step was written back and nobody changed the record
-- since the step (its origin `cur_o` is still the one the step produced),
-- else the new version: a colleague's change of another field must keep
-- an older step of the record (an undo of its create) from reverting.
local function record_marker(all, r, new_v, cur_o)
  local o = new_v
  if all and cur_o == tonumber(r.v) then o = tonumber(r.ov) or 0 end
  return { '_u', jint(new_v) .. ':' .. jint(o) }, o
end

local function revert_update(ctx, r, state, cur_v, cur_o)
  local todo, all = revertible(ctx, r, state)
  if #todo == 0 then return end
  local new_b = size_after(state, todo)
  local cur_b = C.state_bytes(state)
  if new_b > ctx.h.maxRecordBytes and new_b > cur_b then
    for _, t in ipairs(todo) do skip(ctx, state, r.r, t.f, 'too_large') end
    return
  end
  local new_v = cur_v + 1
  emit(ctx, r, 'update', new_v, changes_of(ctx, todo), nil)
  local marker, o = record_marker(all, r, new_v, cur_o)
  marker[#marker + 1] = '_b'
  marker[#marker + 1] = jint(new_b)
  local inverse = write_fields(ctx, state, todo, new_v, marker)
  ctx.inverse[#ctx.inverse + 1] = { r = r.r, t = 'update', v = o, ov = cur_o, f = inverse }
end

-- The fields changed since version `v` (all skipped), or the record.
local function skip_changed_since(ctx, r, state, v)
  local flat = call('HGETALL', state)
  local hash = {}
  for i = 1, #flat, 2 do hash[flat[i]] = flat[i + 1] end
  local any = false
  for i = 1, #flat, 2 do
    local f = flat[i]:sub(3)
    if flat[i]:sub(1, 2) == 'v:' and S.origin(flat[i + 1], hash['u:' .. f]) > v then
      any = true
      skip(ctx, state, r.r, f, 'changed')
    end
  end
  if not any then skip(ctx, state, r.r, nil, 'changed') end
end

local function revert_create(ctx, r, state, cur_v, cur_o)
  if cur_o ~= tonumber(r.v) then
    skip_changed_since(ctx, r, state, tonumber(r.v) or 0)
    return
  end
  local new_v = cur_v + 1
  emit(ctx, r, 'delete', new_v, '', nil)
  local o = tonumber(r.ov) or 0
  call('HSET', state, '_v', jint(new_v), '_del', '1', '_u', jint(new_v) .. ':' .. jint(o))
  ctx.inverse[#ctx.inverse + 1] = { r = r.r, t = 'delete', v = o, ov = cur_o, f = {} }
end

-- Every field of the record once `todo` is written back, as a create's
-- changes.
local function undeleted_changes(state, todo)
  local values, order = {}, {}
  local flat = call('HGETALL', state)
  for i = 1, #flat, 2 do
    if flat[i]:sub(1, 2) == 'd:' then
      local f = flat[i]:sub(3)
      order[#order + 1] = f
      values[f] = flat[i + 1]
    end
  end
  for _, t in ipairs(todo) do
    if values[t.f] == nil then order[#order + 1] = t.f end
    values[t.f] = t.old or false
  end
  local parts = {}
  for _, f in ipairs(order) do
    if values[f] then
      parts[#parts + 1] = '{"fieldId":' .. jstr(f) .. ',"newValue":' .. value_json(values[f]) .. '}'
    end
  end
  return '[' .. table.concat(parts, ',') .. ']'
end

local function revert_delete(ctx, r, state, cur_v, cur_o)
  local todo, all = revertible(ctx, r, state)
  local new_v = cur_v + 1
  local metadata = ctx.metadata:sub(1, -2) .. ',"undelete":true}'
  emit(ctx, r, 'create', new_v, undeleted_changes(state, todo), metadata)
  call('HDEL', state, '_del')
  local marker, o = record_marker(all, r, new_v, cur_o)
  marker[#marker + 1] = '_b'
  marker[#marker + 1] = jint(size_after(state, todo))
  write_fields(ctx, state, todo, new_v, marker)
  ctx.inverse[#ctx.inverse + 1] = { r = r.r, t = 'create', v = o, ov = cur_o, f = {} }
end

-- Reverts one record of the step (see "What it does").
local function revert(ctx, r, state)
  local head = call('HMGET', state, '_v', '_del', '_u')
  local cur_v = tonumber(head[1]) or 0
  local deleted = head[2] == '1'
  local cur_o = S.origin(head[1], head[3])
  ctx.last_v = cur_v
  if r.t == 'none' then return end
  if cur_v >= MAX_VERSION then
    skip(ctx, state, r.r, nil, 'too_large')
  elseif r.t == 'delete' then
    if not deleted then
      skip(ctx, state, r.r, nil, 'exists')
    elseif cur_o ~= tonumber(r.v) then
      skip(ctx, state, r.r, nil, 'changed')
    else
      revert_delete(ctx, r, state, cur_v, cur_o)
    end
  elseif deleted or cur_v == 0 then
    skip(ctx, state, r.r, nil, 'deleted')
  elseif r.t == 'create' then
    revert_create(ctx, r, state, cur_v, cur_o)
  else
    revert_update(ctx, r, state, cur_v, cur_o)
  end
end

-- The answer, and the dedup key's short form of it.
local function answer(ctx, step_id)
  local written = #ctx.events
  local status = 'applied'
  if #ctx.skipped > 0 then
    status = written > 0 and 'partial' or 'conflict'
  end
  local out = '{"status":"' .. status .. '","' .. ctx.done .. '":' .. jstr(step_id)
  if written > 0 then
    local last = ctx.events[written]
    out = out .. ',"eventId":' .. jstr(last.id) .. ',"version":' .. jint(last.v)
  else
    out = out .. ',"version":' .. jint(ctx.last_v or 0)
  end
  local short = out .. '}'
  local events = {}
  for i, e in ipairs(ctx.events) do
    events[i] = '{"recordId":' .. jstr(e.r) .. ',"eventId":' .. jstr(e.id) .. ',"version":' .. jint(e.v)
      .. ',"type":"' .. e.kind .. '"}'
  end
  out = out .. ',"events":[' .. table.concat(events, ',') .. '],"skipped":[' .. table.concat(ctx.skipped, ',') .. ']'
  if ctx.truncated then out = out .. ',"truncated":true' end
  return out .. '}', short
end

-- The dedup key (the last KEY when the header has a clientChangeId):
-- nil, or an error reply.
local function check_dedup(keys, h)
  local cc = h.clientChangeId
  if cc == nil then return nil end
  local tail = ':cc:' .. #h.userId .. ':' .. h.userId .. ':' .. cc
  if #keys <= FIXED_KEYS or keys[#keys]:sub(-#tail) ~= tail then
    return fail('a clientChangeId needs the dedup key, ending with ' .. tail .. ', as the last key')
  end
  return nil
end

-- The top step if it is the one the caller read, and its records' keys
-- line up; else nil and the answer.
local function expected_step(keys, h, n)
  local raw = call('LINDEX', keys[1], 0)
  if not raw then return nil, '{"status":"nothing"}' end
  local step = S.decode(raw)
  if step == nil then
    call('LPOP', keys[1]) -- not a step: dropped so the stack goes on
    return nil, '{"status":"stale","stepId":""}'
  end
  if step.id ~= h.stepId or #step.recs ~= n then
    return nil, '{"status":"stale","stepId":' .. jstr(step.id) .. '}'
  end
  for i, r in ipairs(step.recs) do
    local at = FIXED_KEYS + 2 * i - 1
    local tail, itail = ':rec:' .. r.r, ':rh:' .. r.r
    if keys[at]:sub(-#tail) ~= tail or keys[at + 1]:sub(-#itail) ~= itail then
      return nil, fail('KEYS[' .. at .. '] and [' .. (at + 1) .. '] must be the hash and history index of record ' .. r.r)
    end
    r.state, r.index = keys[at], keys[at + 1]
    -- A history index of another type refuses the call before any write.
    call('LLEN', r.index)
  end
  return step
end

local function undo(keys, args)
  local h, herr = C.decode_json(args[1], 'header', 'object')
  if h == nil then return fail(herr or 'header is required') end
  local bad = check_header(h)
  if bad then return fail(bad) end
  local retention_ms = tonumber(args[2] or '86400000')
  if retention_ms == nil or retention_ms <= 0 then return fail('retentionMs must be a positive number') end
  if #keys < FIXED_KEYS then return fail('expects at least 6 keys: from, to, stream, records, sink floor, doorbell') end
  local derr = check_dedup(keys, h)
  if derr then return derr end
  local dedup = h.clientChangeId and keys[#keys]
  if dedup then
    local first = call('GET', dedup)
    if first then
      local status, rest = first:match('^{"status":"(%a+)"(.*)$')
      if status then return '{"status":"duplicate","originalStatus":"' .. status .. '"' .. rest end
      return '{"status":"duplicate","version":0}'
    end
  end
  local per_record = #keys - FIXED_KEYS - (dedup and 1 or 0)
  if per_record % 2 ~= 0 then
    return fail('expects a hash and a history index per record of the step')
  end
  local step, early = expected_step(keys, h, per_record / 2)
  if step == nil then return early end

  local ctx = {
    h = h, retention_ms = retention_ms, used = 0, truncated = false,
    skipped = {}, events = {}, inverse = {},
    done = h.op == 'undo' and 'undone' or 'redone',
    metadata = '{"' .. (h.op == 'undo' and 'undoOf' or 'redoOf') .. '":' .. jstr(step.id) .. '}',
    commit_keys = { keys[3], false, keys[4], keys[5], keys[6] },
  }
  for _, r in ipairs(step.recs) do
    revert(ctx, r, r.state)
  end
  call('LPOP', keys[1])
  if #ctx.inverse > 0 then
    S.push(keys[2], { id = ctx.events[1].id, at = S.now_ms(), sealed = true, recs = ctx.inverse }, retention_ms)
  end
  local out, short = answer(ctx, step.id)
  if dedup then call('SET', dedup, short, 'EX', DEDUP_TTL_SECS) end
  return out
end

register('rtsync_undo', undo)

return {}
end)
