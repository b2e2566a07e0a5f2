#!lua name=rtsync
--[[
rtsync Redis Functions library. Every sidecar loads it with
`FUNCTION LOAD REPLACE` at start; it is assembled (src/store/library.rs)
from these files, in this order, into one library named `rtsync`:

  lua/rtsync.lua    this file: the header, the module registry and `base`
                    (the helpers the others use, and the way to Redis)
  lua/keycheck.lua  only when the sidecar runs with RTS_LUA_KEY_CHECK=1 (a
                    test aid): checks every key a call touches is in KEYS
  lua/steps.lua     the undo and redo stacks: how rtsync_commit records a step
  lua/commit.lua    rtsync_commit: the atomic version check, state write and append
  lua/undo.lua      rtsync_undo: undo or redo a user's latest step on a table
  lua/presence.lua  rtsync_presence_*: who is on a table, cursors, colors
  lua/streams.lua   rtsync_stream_release: a sidecar stops reading a stream
  lua/history.lua   rtsync_history: history reads bounded by bytes and count
  lua/records.lua   rtsync_load, rtsync_seed: the table's state with versions
  lua/record_history.lua  rtsync_record_history: a record's changes, from its index
  lua/sink.lua      rtsync_sink_lease: which sink delivers a table
  lua/audit.lua     rtsync_audit: the audit log's hash-chained appends
  lua/views.lua     rtsync_view_set, rtsync_view_get: a view's filter (v1.3)

Modules. Each file is one call `define(name, deps, function(m) ... end)`:
`deps` lists the modules it uses, which must be defined before it (the
assembler checks this, and `define` refuses to load otherwise); the body
gets them as `m.<dep>` and returns what it offers to later modules. No
module reads another's locals, so the files' order only has to respect
the declared dependencies. A module on the commit path takes the globals
it uses into locals at the library's first call (`bind` in base): Redis
offers no globals while a library loads, and at call time each global
is looked up through the globals table's metatable.

Keys. Every key a function touches is one of its KEYS (what lets a Redis
Cluster route the call and check its slot); no function derives a key name
from another key. The sidecar sends each function's full key list (built
by src/store/keys.rs). Older key lists, documented before the full forms,
are still accepted: each function has one small adapter (`adapt` below)
that recognises such a call by its number of keys and derives the missing
keys, in the same hash slot, before the same code runs.

Errors that are the caller's fault (bad keys or arguments) are error replies
whose code is `RTSYNC_INVALID`, e.g.
  -RTSYNC_INVALID rtsync_commit: version must be a non-negative integer
so a client tells them from Redis' own errors by the code, not the text.
A change or seed that would make a record's state larger than its bound is
refused with the code `RTSYNC_TOO_LARGE`.
Nothing is written when a function answers an error.
]]

local defined = {}

-- Runs a module's body with the modules it declares, defined earlier, and
-- keeps what it returns for the modules after it. (While a library loads,
-- Redis offers no globals but `redis.register_function` and `redis.log`:
-- a missing dependency is logged, and the load is refused by registering
-- a function under an invalid name.)
local function define(name, deps, body)
  local needs = {}
  for i = 1, #deps do
    local found = defined[deps[i]]
    if found == nil then
      redis.log(redis.LOG_WARNING, 'rtsync: module ' .. name .. ' needs ' .. deps[i] .. ', which is not defined before it')
      redis.register_function { function_name = 'missing dependency', callback = function() end }
    end
    needs[deps[i]] = found
  end
  defined[name] = body(needs) or {}
end

define('base', {}, function()

-- Globals. Redis offers none while the library loads, and at call time a
-- global is looked up through the globals table's metatable, several table
-- look-ups each time. Modules take the ones they use into locals at the
-- first call of any function of the library (`bind`); every entry point
-- is wrapped by `entry`, which runs the binders once. A module's binder
-- reads the globals through a function written before its locals of the
-- same names are declared, so it names the globals themselves (no `_G`).
local binders, bound = {}, false
local function bind(binder)
  binders[#binders + 1] = binder
end
local function entry(callback)
  return function(keys, args)
    if not bound then
      for i = 1, #binders do binders[i]() end
      bound = true
    end
    return callback(keys, args)
  end
end
local function globals()
  return type, tonumber, ipairs, error, cjson, string, redis.call
end
local type, tonumber, ipairs, error, cjson, string, rcall
bind(function()
  type, tonumber, ipairs, error, cjson, string, rcall = globals()
end)

local INVALID = 'RTSYNC_INVALID '
local TOO_LARGE = 'RTSYNC_TOO_LARGE '

-- Unicode format (Cf) and C1 control characters, as UTF-8 byte patterns
-- (Lua 5.1 patterns work on bytes). ASCII controls are `%c`. Kept in step
-- with `src/change/ids.rs`.
local FORBIDDEN_IN_IDS = {
  '[%c{}]',
  '\194[\128-\159]',           -- U+0080..U+009F C1 controls
  '\194\173',                  -- U+00AD soft hyphen
  '\216[\128-\133]',           -- U+0600..U+0605
  '\216\156',                  -- U+061C arabic letter mark
  '\219\157',                  -- U+06DD
  '\220\143',                  -- U+070F
  '\224\162[\144\145]',        -- U+0890..U+0891
  '\224\163\162',              -- U+08E2
  '\225\160\142',              -- U+180E mongolian vowel separator
  '\226\128[\139-\143]',       -- U+200B..U+200F zero-width, LRM, RLM
  '\226\128[\170-\174]',       -- U+202A..U+202E bidi embeddings, overrides
  '\226\129[\160-\164]',       -- U+2060..U+2064 word joiner, invisible operators
  '\226\129[\166-\175]',       -- U+2066..U+206F bidi isolates, deprecated formats
  '\239\187\191',              -- U+FEFF byte order mark
  '\239\191[\185-\187]',       -- U+FFF9..U+FFFB interlinear annotations
  '\240\145\130\189',          -- U+110BD
  '\240\145\131\141',          -- U+110CD
  '\240\147\144[\176-\191]',   -- U+13430..U+1343F
  '\240\155\178[\160-\163]',   -- U+1BCA0..U+1BCA3
  '\240\157\133[\179-\186]',   -- U+1D173..U+1D17A
  '\243\160[\128-\129][\128-\191]', -- U+E0000..U+E007F tags
}

-- Ids already found valid. Every commit checks four or five ids and most
-- repeat (the user, the table, the connection, the base), so a hit saves a
-- scan; the set is cleared when it reaches ID_CACHE_MAX, which bounds its
-- memory. Only a cache: losing it (a restart, a reload) changes nothing.
local ID_CACHE_MAX = 4096
local valid_ids, valid_id_count = {}, 0

local function scan_id(s)
  -- Fast path: printable ASCII other than braces (one scan).
  if not s:find('[^ -z|~]') then
    return true
  end
  for _, p in ipairs(FORBIDDEN_IN_IDS) do
    if s:find(p) then
      return false
    end
  end
  return true
end

-- An id: 1..128 bytes, no control or format characters, no braces (they
-- would break the cluster hash tag).
local function is_id(s)
  if type(s) ~= 'string' or #s < 1 or #s > 128 then
    return false
  end
  if valid_ids[s] then
    return true
  end
  if not scan_id(s) then
    return false
  end
  if valid_id_count >= ID_CACHE_MAX then
    valid_ids, valid_id_count = {}, 0
  end
  valid_ids[s] = true
  valid_id_count = valid_id_count + 1
  return true
end

local function is_null(v)
  return v == nil or v == cjson.null
end

-- A JSON string literal.
local function jstr(s)
  return cjson.encode(s)
end

-- An integer as JSON (tostring would switch to exponents for large ones).
local function jint(n)
  return string.format('%d', n)
end

-- Registers `core` as the Redis function `name`. `opts.adapt(keys, args)`
-- (optional) turns a call's KEYS into the full key list `core` expects
-- (nil and an error reply to refuse the call), and its third result is
-- handed to `core` as its third argument. `keycheck` swaps this for a
-- checking version.
local function register(name, core, opts)
  local adapt = opts and opts.adapt
  local callback = core
  if adapt then
    callback = function(keys, args)
      local full, err, extra = adapt(keys, args)
      if full == nil then return err end
      return core(full, args, extra)
    end
  end
  redis.register_function { function_name = name, callback = entry(callback), flags = opts and opts.flags }
end

return {
  INVALID = INVALID, TOO_LARGE = TOO_LARGE,
  is_id = is_id, is_null = is_null, jstr = jstr, jint = jint,
  call = function(...) return rcall(...) end, register = register,
  bind = bind, entry = entry,
}
end)
