"""The Lua steps of the store: each runs atomically in Redis, so it holds across any number of
API and worker processes (claiming a warm sandbox, taking an instance slot or a port, releasing).
"""

from __future__ import annotations

from types import SimpleNamespace

import redis

# Take one instance slot unless the cap is reached.  KEYS: live  ARGV: name, max
RESERVE = """
if tonumber(ARGV[2]) > 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# Take a pool slot (and an instance slot) unless the pool is full.
# KEYS: pool list, pending zset, live  ARGV: name, pool size, max, now, stale-after
RESERVE_POOL = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[5]))
if redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) > 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# Claim the oldest warm sandbox for a session.  KEYS: pool list, sessions set, heartbeats
# ARGV: namespace, session ctx id ('' for none), meta json, now
CLAIM = """
while true do
  local name = redis.call('LPOP', KEYS[1])
  if not name then return false end
  local key = ARGV[1] .. 'sandbox:' .. name
  if redis.call('HGET', key, 'state') == 'warm' then
    redis.call('HSET', key, 'state', 'running', 'meta', ARGV[3], 'session_ctx_id', ARGV[2],
               'last_active_at', ARGV[4], 'updated_at', ARGV[4], 'claimed_at', ARGV[4])
    if ARGV[2] ~= '' then
      redis.call('SADD', ARGV[1] .. 'session:' .. ARGV[2], name)
      redis.call('SADD', KEYS[2], ARGV[2])
      redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
    end
    return name
  end
end
"""

# Mark a record released (or recycled) once; returns its previous state, or false if it was not live.
# KEYS: record, live, pool list  ARGV: new state, now, ttl, reason, namespace
RETIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or (state ~= 'creating' and state ~= 'warm' and state ~= 'running') then return false end
redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'container_name'))
redis.call('LREM', KEYS[3], 0, redis.call('HGET', KEYS[1], 'container_name'))
local ctx = redis.call('HGET', KEYS[1], 'session_ctx_id')
if ARGV[1] == 'released' then
  redis.call('HSET', KEYS[1], 'state', 'released', 'released_at', ARGV[2], 'updated_at', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  if ctx and ctx ~= '' then
    local skey = ARGV[5] .. 'session:' .. ctx
    redis.call('SREM', skey, redis.call('HGET', KEYS[1], 'container_name'))
    if redis.call('SCARD', skey) == 0 then
      redis.call('SREM', ARGV[5] .. 'sessions', ctx)
      redis.call('ZREM', ARGV[5] .. 'heartbeats', ctx)
    end
  end
else
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'recycled_at', ARGV[2], 'updated_at', ARGV[2],
             'recycle_reason', ARGV[4])
end
return state
"""

# Take a free port of a host's range, starting at a random offset, and record it in the sandbox's
# record in the same step (so reconcile never sees a port taken that no record holds).
# KEYS: port set, record  ARGV: start, end (exclusive), offset
TAKE_PORT = """
local s, e, off = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = e - s
for i = 0, n - 1 do
  local p = s + ((off + i) % n)
  if redis.call('SADD', KEYS[1], p) == 1 then
    redis.call('HSET', KEYS[2], 'port', p)
    return p
  end
end
return false
"""

# Record a touch of a session: heartbeat and last_active_at of its running sandboxes.
# KEYS: session set, heartbeats  ARGV: namespace, ctx, now.  Returns the session's recycled names.
TOUCH = """
local recycled = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'sandbox:' .. name
  local state = redis.call('HGET', key, 'state')
  if state == 'running' then
    redis.call('HSET', key, 'last_active_at', ARGV[3])
  elseif state == 'recycled' then
    table.insert(recycled, name)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
return recycled
"""

# Finish a create: creating -> warm/running, unless it was released meanwhile.
# KEYS: record  ARGV: new state, now.  Returns 1 if the sandbox is now live.
FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'last_active_at', ARGV[2], 'updated_at', ARGV[2])
return 1
"""

# Make this worker process the owner of a create, unless a live one already is (a copy of the job
# that was re-sent after its worker died must not run beside the original).
# KEYS: record  ARGV: host, node, worker-key prefix.  1: ours now; 0: not creating; -1: a live owner
OWN_CREATE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'creating_on')
if owner and owner ~= '' and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return -1
end
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'creating_on', ARGV[2])
return 1
"""

# Delete a lock only if it is still ours.  KEYS: lock  ARGV: token
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Hand a job's reply to its waiter, if one still waits.  KEYS: waiting flag, reply list  ARGV: body
REPLY = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], 60)
  return 1
end
return 0
"""


def register(client: redis.Redis) -> SimpleNamespace:
    """The scripts, ready to call: ``scripts.claim(keys=[...], args=[...])``."""
    return SimpleNamespace(
        reserve=client.register_script(RESERVE),
        reserve_pool=client.register_script(RESERVE_POOL),
        claim=client.register_script(CLAIM),
        retire=client.register_script(RETIRE),
        take_port=client.register_script(TAKE_PORT),
        touch=client.register_script(TOUCH),
        finish=client.register_script(FINISH),
        own_create=client.register_script(OWN_CREATE),
        unlock=client.register_script(UNLOCK),
        reply=client.register_script(REPLY))
