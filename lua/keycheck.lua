
--[==[
keycheck: a test aid, assembled in only when the sidecar runs with
RTS_LUA_KEY_CHECK=1 (src/store/library.rs; off, it costs nothing: this file
is not in the library). It swaps base's `call` and `register` for checking
versions, before any other module takes them:

- `register` notes, for the length of one call, the function's name and
  its full key list (what its adapter hands the core);
- `call` refuses, with the error reply
    -RTSYNC_KEYCHECK <function>: key <k> not in KEYS
  a key argument that is not one of those keys, and refuses a command
  missing from KEY_ARGS (a new command must be declared here).

Shard channels (SPUBLISH) are not keys and are not checked.
]==]

define('keycheck', { 'base' }, function(m)
  local base = m.base
  local plain_call = base.call

  -- Command -> the positions of its key arguments (1 is the command), or
  -- 'rest' for "every argument after the command".
  local KEY_ARGS = {
    DEL = 'rest', EXISTS = 'rest',
    GET = { 2 }, SET = { 2 }, PEXPIRE = { 2 },
    HGET = { 2 }, HSET = { 2 }, HMGET = { 2 }, HDEL = { 2 }, HGETALL = { 2 }, HSTRLEN = { 2 },
    HLEN = { 2 },
    ZADD = { 2 }, ZREM = { 2 }, ZRANGE = { 2 }, ZRANGEBYSCORE = { 2 },
    XADD = { 2 }, XRANGE = { 2 }, XREVRANGE = { 2 }, XLEN = { 2 },
    XGROUP = { 3 }, XINFO = { 3 },
    LPUSH = { 2 }, LTRIM = { 2 }, LINDEX = { 2 }, RPOP = { 2 }, LRANGE = { 2 }, LLEN = { 2 },
    LSET = { 2 }, LPOP = { 2 },
    SPUBLISH = {}, TIME = {},
  }

  local current = { name = '?', keys = {} }

  local function refuse(msg)
    error({ err = 'RTSYNC_KEYCHECK ' .. current.name .. ': ' .. msg })
  end

  local function checked_call(...)
    local args = { ... }
    local cmd = string.upper(tostring(args[1]))
    local at = KEY_ARGS[cmd]
    if at == nil then
      refuse('command ' .. cmd .. ' is not declared in lua/keycheck.lua')
    end
    if at == 'rest' then
      at = {}
      for i = 2, #args do at[#at + 1] = i end
    end
    for _, i in ipairs(at) do
      if not current.keys[args[i]] then
        refuse('key ' .. tostring(args[i]) .. ' not in KEYS')
      end
    end
    return plain_call(...)
  end

  local function allow(keys)
    local set = {}
    for i = 1, #keys do
      if keys[i] then set[keys[i]] = true end
    end
    current.keys = set
  end

  -- base.register, noting each call's name and keys: the keys given while
  -- the adapter runs, the full list while the core runs.
  local function checked_register(name, core, opts)
    local adapt = opts and opts.adapt
    local function callback(keys, args)
      current.name = name
      allow(keys)
      local full, err, extra = keys, nil, nil
      if adapt then
        full, err, extra = adapt(keys, args)
        if full == nil then return err end
      end
      allow(full)
      return core(full, args, extra)
    end
    redis.register_function { function_name = name, callback = base.entry(callback), flags = opts and opts.flags }
  end

  base.call = checked_call
  base.register = checked_register
end)
