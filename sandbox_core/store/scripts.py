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

# Lua shared by the pool's scripts (prefixed to them).
#  give: hand a warm sandbox to a session (what a claim writes).
#  live_waiters: how many claims wait for a pool create, dropping those whose caller gave up.
_POOL_LIB = """
local function give(ns, name, ctx, meta, now, sessions, heartbeats)
  redis.call('HSET', ns .. 'sandbox:' .. name, 'state', 'running', 'meta', meta,
             'session_ctx_id', ctx, 'last_active_at', now, 'updated_at', now, 'claimed_at', now)
  if ctx ~= '' then
    redis.call('SADD', ns .. 'session:' .. ctx, name)
    redis.call('SADD', sessions, ctx)
    redis.call('ZADD', heartbeats, now, ctx)
  end
end
local function live_waiters(ns, waiters)
  local n = 0
  for _, job in ipairs(redis.call('LRANGE', waiters, 0, -1)) do
    if redis.call('EXISTS', ns .. 'waiting:' .. job) == 1 then n = n + 1
    else redis.call('LREM', waiters, 0, job) end
  end
  return n
end
"""

# Take a pool slot (and an instance slot) unless the pool is full: warm + starting reach
# POOL_SIZE plus the claims waiting for one.
# KEYS: pool list, pending zset, live, waiters  ARGV: name, pool size, max, now, stale-after, ns
RESERVE_POOL = _POOL_LIB + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[5]))
local target = tonumber(ARGV[2]) + live_waiters(ARGV[6], KEYS[4])
if redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= target then return 0 end
if tonumber(ARGV[3]) > 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# Claim the oldest warm sandbox for a session or, the pool being empty, queue the claim for the
# next pooled create to finish (first come, first served). A create is reserved for the claim
# (pending + an instance slot, the candidate name) unless one in flight is spare already; under
# MAX_SANDBOX_INSTANCES with none spare, the claim is refused.
# KEYS: pool list, sessions, heartbeats, pending, waiters, live
# ARGV: ns, ctx ('' for none), meta json, now, job, patience, candidate, max, stale-after
# Returns {1, name} claimed; {2, reserved name or ''} queued; {0} refused.
CLAIM_OR_WAIT = _POOL_LIB + """
while true do
  local name = redis.call('LPOP', KEYS[1])
  if not name then break end
  if redis.call('HGET', ARGV[1] .. 'sandbox:' .. name, 'state') == 'warm' then
    give(ARGV[1], name, ARGV[2], ARGV[3], ARGV[4], KEYS[2], KEYS[3])
    return {1, name}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[9]))
local reserved = ''
if redis.call('ZCARD', KEYS[4]) <= redis.call('LLEN', KEYS[5]) then
  if tonumber(ARGV[8]) > 0 and redis.call('SCARD', KEYS[6]) >= tonumber(ARGV[8]) then return {0} end
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[7])
  redis.call('SADD', KEYS[6], ARGV[7])
  reserved = ARGV[7]
end
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('SET', ARGV[1] .. 'waiting:' .. ARGV[5], cjson.encode({ctx = ARGV[2], meta = ARGV[3]}),
           'EX', ARGV[6])
return {2, reserved}
"""

# A pooled create finished (its record is warm): hand it to the oldest claim still waiting,
# else put it in the pool, unless the pool is full (a waiter gave up after its create was
# reserved): then it is surplus, for the caller to release.
# KEYS: record, pending, waiters, pool list, sessions, heartbeats
# ARGV: ns, name, pool size, now, reply body
# Returns {1, job} handed to that waiter; {0} pooled; {2} surplus; {3} no longer warm.
POOL_READY = _POOL_LIB + """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], 'state') ~= 'warm' then return {3} end
while true do
  local job = redis.call('LPOP', KEYS[3])
  if not job then break end
  local waiting = ARGV[1] .. 'waiting:' .. job
  local claim = redis.call('GET', waiting)
  if claim then
    redis.call('DEL', waiting)
    local c = cjson.decode(claim)
    give(ARGV[1], ARGV[2], c.ctx, c.meta, ARGV[4], KEYS[5], KEYS[6])
    local reply = ARGV[1] .. 'reply:' .. job
    redis.call('RPUSH', reply, ARGV[5])
    redis.call('EXPIRE', reply, 60)
    return {1, job}
  end
end
if redis.call('LLEN', KEYS[4]) >= tonumber(ARGV[3]) then return {2} end
redis.call('RPUSH', KEYS[4], ARGV[2])
return {0}
"""

# A pooled create failed or was closed: it leaves the pending set, and if the claims waiting now
# outnumber the creates in flight, the oldest of them gets the error (as its own create would).
# KEYS: pending, waiters  ARGV: ns, name, error reply body.  Returns 1 if a waiter got it.
ABANDON = _POOL_LIB + """
redis.call('ZREM', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= live_waiters(ARGV[1], KEYS[2]) then return 0 end
while true do
  local job = redis.call('LPOP', KEYS[2])
  if not job then return 0 end
  if redis.call('DEL', ARGV[1] .. 'waiting:' .. job) == 1 then
    local reply = ARGV[1] .. 'reply:' .. job
    redis.call('RPUSH', reply, ARGV[3])
    redis.call('EXPIRE', reply, 60)
    return 1
  end
end
"""

# Claim the oldest warm sandbox for a session; false on a miss.
# KEYS: pool list, sessions set, heartbeats  ARGV: namespace, session ctx id ('' for none), meta, now
CLAIM = _POOL_LIB + """
while true do
  local name = redis.call('LPOP', KEYS[1])
  if not name then return false end
  if redis.call('HGET', ARGV[1] .. 'sandbox:' .. name, 'state') == 'warm' then
    give(ARGV[1], name, ARGV[2], ARGV[3], ARGV[4], KEYS[2], KEYS[3])
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
        claim_or_wait=client.register_script(CLAIM_OR_WAIT),
        pool_ready=client.register_script(POOL_READY),
        abandon=client.register_script(ABANDON),
        retire=client.register_script(RETIRE),
        take_port=client.register_script(TAKE_PORT),
        touch=client.register_script(TOUCH),
        finish=client.register_script(FINISH),
        own_create=client.register_script(OWN_CREATE),
        unlock=client.register_script(UNLOCK),
        reply=client.register_script(REPLY))
