"""The fleet's state in Redis: sandbox records, sessions, warm pools, ports, heartbeats, the cap.

This is the only module that knows the key layout. Every step that must not interleave with another
process (claiming a warm sandbox, taking an instance slot, taking a port, releasing) is one Lua
script, so it holds across any number of API and worker processes.

Keys (``N`` = the namespace, ``sandbox_fleet:``):
  N sandbox:<name>         hash   the record (fields of upstream's ContainerModel, plus host/port)
  N live                   set    names that count toward MAX_SANDBOX_INSTANCES
  N host:<host>            set    names whose container lives on that host
  N session:<ctx>          set    names in a session (upstream's session_mapping)
  N sessions               set    session ids with at least one sandbox
  N heartbeats             zset   session id -> last touch (the reaper reads only the expired)
  N pool_pending:<type>    zset   pooled creates in flight -> start time
  N deadlines              zset   record name -> when the reaper next looks at its lifetime
  N draining:<host>        string set while a host shuts down: its workers start no creates
  N worker:<node>          hash   a live worker process and the jobs it runs (TTL: its heartbeat)
  N metrics                hash   the workers' counters and histograms (sandbox_core.metrics)
  N failures               list   the latest failed creates, teardowns and calls, newest first
  <REDIS_CONTAINER_POOL_KEY>:<type>  list  warm sandboxes ready to claim
  <REDIS_PORT_KEY>:<host>            set   ports taken on that host
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable

import redis

from .errors import CapacityExceeded
from .settings import Settings

NS = "sandbox_fleet:"

#: States, as upstream names them, plus ``creating`` while a container starts.
CREATING, WARM, RUNNING, RECYCLED, REPLACED, RELEASED, ERROR = (
    "creating", "warm", "running", "recycled", "replaced", "released", "error")
LIVE_STATES = (CREATING, WARM, RUNNING)
MAX_REDIRECTS = 10

# Take one instance slot unless the cap is reached.  KEYS: live  ARGV: name, max
_RESERVE = """
if tonumber(ARGV[2]) > 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# Take a pool slot (and an instance slot) unless the pool is full.
# KEYS: pool list, pending zset, live  ARGV: name, pool size, max, now, stale-after
_RESERVE_POOL = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[5]))
if redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) > 0 and redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# Claim the oldest warm sandbox for a session.  KEYS: pool list, sessions set, heartbeats
# ARGV: namespace, session ctx id ('' for none), meta json, now
_CLAIM = """
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
_RETIRE = """
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
_TAKE_PORT = """
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
_TOUCH = """
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
_FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'last_active_at', ARGV[2], 'updated_at', ARGV[2])
return 1
"""

# Make this worker process the owner of a create, unless a live one already is (a copy of the job
# that was re-sent after its worker died must not run beside the original).
# KEYS: record  ARGV: host, node, worker-key prefix.  1: ours now; 0: not creating; -1: a live owner
_OWN_CREATE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'creating' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'creating_on')
if owner and owner ~= '' and owner ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return -1
end
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'creating_on', ARGV[2])
return 1
"""

# Delete a lock only if it is still ours.  KEYS: lock  ARGV: token
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Hand a job's reply to its waiter, if one still waits.  KEYS: waiting flag, reply list  ARGV: body
_REPLY = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], 60)
  return 1
end
return 0
"""


def now() -> float:
    return time.time()


class Store:
    """Typed access to the fleet's Redis keys. Thread-safe: it only holds a connection pool."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._reserve = client.register_script(_RESERVE)
        self._reserve_pool = client.register_script(_RESERVE_POOL)
        self._claim = client.register_script(_CLAIM)
        self._retire = client.register_script(_RETIRE)
        self._take_port = client.register_script(_TAKE_PORT)
        self._touch = client.register_script(_TOUCH)
        self._reply = client.register_script(_REPLY)
        self._finish = client.register_script(_FINISH)
        self._unlock = client.register_script(_UNLOCK)
        self._own_create = client.register_script(_OWN_CREATE)

    @classmethod
    def connect(cls, settings: Settings, max_connections: int = 256) -> Store:
        client = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, max_connections=max_connections,
            health_check_interval=30)
        return cls(client, settings)

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def record_key(name: str) -> str:
        return f"{NS}sandbox:{name}"

    def pool_key(self, sandbox_type: str) -> str:
        return f"{self.settings.REDIS_CONTAINER_POOL_KEY}:{sandbox_type}"

    def ports_key(self, host: str) -> str:
        return f"{self.settings.REDIS_PORT_KEY}:{host}"

    @staticmethod
    def host_key(host: str) -> str:
        return f"{NS}host:{host}"

    # -- records -----------------------------------------------------------------------------

    def put(self, name: str, **fields: object) -> None:
        self.redis.hset(self.record_key(name), mapping=_encode(fields))

    def update(self, name: str, **fields: object) -> None:
        fields.setdefault("updated_at", now())
        self.put(name, **fields)

    def get(self, name: str) -> dict | None:
        data = self.redis.hgetall(self.record_key(name))
        return _decode(data) if data else None

    def find(self, identity: str, follow: bool = True) -> dict | None:
        """A record by container name or bare session id, following ``redirect_to`` hops."""
        record = self.get(identity) or self.get(self.settings.CONTAINER_PREFIX_KEY + identity)
        hops = 0
        while follow and record and record.get("redirect_to") and hops < MAX_REDIRECTS:
            record = self.get(record["redirect_to"]) or record
            hops += 1
        return record

    def delete(self, name: str) -> None:
        self.redis.delete(self.record_key(name))

    def open_record(self, name: str, **fields: object) -> None:
        """Write the record of a sandbox about to be created (state ``creating``), and have the
        reaper look at it soon: every record gets a deadline (see Fleet.reap_deadlines)."""
        stamp = now()
        self.put(name, container_name=name, state=CREATING, created_at=stamp, updated_at=stamp,
                 **fields)
        self.reschedule(name, stamp)

    # -- capacity ----------------------------------------------------------------------------

    def reserve_instance(self, name: str) -> None:
        """Take one slot under MAX_SANDBOX_INSTANCES, or raise CapacityExceeded."""
        if not self._reserve(keys=[f"{NS}live"], args=[name, self.settings.MAX_SANDBOX_INSTANCES]):
            raise CapacityExceeded(
                f"MAX_SANDBOX_INSTANCES={self.settings.MAX_SANDBOX_INSTANCES} sandboxes are live")

    def reserve_pool_slot(self, sandbox_type: str, name: str, stale_after: float) -> bool:
        """Take a place in a type's pool for a create in flight; False if the pool is full."""
        result = self._reserve_pool(
            keys=[self.pool_key(sandbox_type), f"{NS}pool_pending:{sandbox_type}", f"{NS}live"],
            args=[name, self.settings.POOL_SIZE, self.settings.MAX_SANDBOX_INSTANCES, now(),
                  stale_after])
        return result == 1

    def pool_add(self, sandbox_type: str, name: str) -> None:
        """A pooled create finished: its sandbox becomes claimable."""
        pipe = self.redis.pipeline()
        pipe.zrem(f"{NS}pool_pending:{sandbox_type}", name)
        pipe.rpush(self.pool_key(sandbox_type), name)
        pipe.execute()

    def pool_abandon(self, sandbox_type: str, name: str) -> None:
        self.redis.zrem(f"{NS}pool_pending:{sandbox_type}", name)

    def pool_size(self, sandbox_type: str) -> int:
        return self.redis.llen(self.pool_key(sandbox_type))

    def pool_starting(self, sandbox_type: str) -> int:
        return self.redis.zcard(f"{NS}pool_pending:{sandbox_type}")

    def claim(self, sandbox_type: str, session_ctx_id: str | None, meta: dict | None) -> str | None:
        """Atomically take a warm sandbox of a type for a session; None on a miss."""
        return self._claim(
            keys=[self.pool_key(sandbox_type), f"{NS}sessions", f"{NS}heartbeats"],
            args=[NS, session_ctx_id or "", json.dumps(meta or {}), now()])

    def live_count(self) -> int:
        return self.redis.scard(f"{NS}live")

    def live_names(self) -> set[str]:
        return self.redis.smembers(f"{NS}live")

    # -- sessions ----------------------------------------------------------------------------

    def join_session(self, name: str, session_ctx_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.sadd(f"{NS}session:{session_ctx_id}", name)
        pipe.sadd(f"{NS}sessions", session_ctx_id)
        pipe.zadd(f"{NS}heartbeats", {session_ctx_id: now()})
        pipe.execute()

    def leave_session(self, name: str, session_ctx_id: str) -> None:
        self.redis.srem(f"{NS}session:{session_ctx_id}", name)

    def session_names(self, session_ctx_id: str) -> list[str]:
        return sorted(self.redis.smembers(f"{NS}session:{session_ctx_id}"))

    def session_keys(self) -> list[str]:
        return sorted(self.redis.smembers(f"{NS}sessions"))

    def touch(self, session_ctx_id: str) -> list[str]:
        """Heartbeat a session; returns the names of its recycled sandboxes, to restore."""
        return self._touch(
            keys=[f"{NS}session:{session_ctx_id}", f"{NS}heartbeats"],
            args=[NS, session_ctx_id, now()])

    def idle_sessions(self, idle_for: float) -> list[str]:
        return self.redis.zrangebyscore(f"{NS}heartbeats", "-inf", now() - idle_for)

    def heartbeat_of(self, session_ctx_id: str) -> float | None:
        return self.redis.zscore(f"{NS}heartbeats", session_ctx_id)

    def forget_heartbeat(self, session_ctx_id: str) -> None:
        self.redis.zrem(f"{NS}heartbeats", session_ctx_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def retire(self, record: dict, state: str = RELEASED, reason: str = "") -> str | None:
        """Move a live record to released/recycled exactly once; returns its previous state."""
        return self._retire(
            keys=[self.record_key(record["container_name"]), f"{NS}live",
                  self.pool_key(record.get("pool_type") or record["sandbox_type"])],
            args=[state, now(), self.settings.RELEASE_KET_TTL, reason, NS])

    def finish_create(self, name: str, state: str) -> bool:
        """creating -> warm/running; False if the sandbox was released while it started."""
        return bool(self._finish(keys=[self.record_key(name)], args=[state, now()]))

    def own_create(self, name: str, host: str, node: str) -> int:
        """Make worker ``node`` on ``host`` the owner of a create: 1 if it now is, 0 if the record
        is no longer creating, -1 if another live worker process runs it."""
        return int(self._own_create(keys=[self.record_key(name)], args=[host, node, f"{NS}worker:"]))

    def start_draining(self, host: str, ttl: int) -> None:
        """A host is shutting down: its workers start no more creates (until ttl or stop_draining)."""
        self.redis.set(f"{NS}draining:{host}", "1", ex=max(1, int(ttl)))

    def stop_draining(self, host: str) -> None:
        self.redis.delete(f"{NS}draining:{host}")

    def is_draining(self, host: str) -> bool:
        return bool(self.redis.exists(f"{NS}draining:{host}"))

    def host_names(self, host: str) -> set[str]:
        return self.redis.smembers(self.host_key(host))

    def add_to_host(self, host: str, name: str) -> None:
        self.redis.sadd(self.host_key(host), name)

    def remove_from_host(self, host: str, name: str) -> None:
        self.redis.srem(self.host_key(host), name)

    # -- lifetimes and deadlines (read by Fleet.reap_deadlines) -------------------------------

    def due_deadlines(self, limit: int) -> list[str]:
        """Names whose deadline has come, oldest first, at most ``limit`` (one reaper tick)."""
        return self.redis.zrangebyscore(f"{NS}deadlines", "-inf", now(), start=0, num=limit)

    def reschedule(self, name: str, at: float) -> None:
        """The reaper looks at this record again at ``at`` (never later than it may expire)."""
        self.redis.zadd(f"{NS}deadlines", {name: at})

    def forget_deadline(self, name: str) -> None:
        self.redis.zrem(f"{NS}deadlines", name)

    def touch_sandbox(self, name: str) -> None:
        """A call reached a sandbox with no session: it is not idle (FLEET_SANDBOX_IDLE_TIMEOUT)."""
        self.redis.hset(self.record_key(name), "last_active_at", now())

    # -- ports -------------------------------------------------------------------------------

    def take_port(self, host: str, name: str, offset: int) -> int:
        """A port of the host's range for sandbox ``name``, written into its record atomically."""
        start, end = self.settings.PORT_RANGE
        port = self._take_port(keys=[self.ports_key(host), self.record_key(name)],
                               args=[start, end, offset])
        if not port:
            raise CapacityExceeded(f"no free port left in PORT_RANGE {list(self.settings.PORT_RANGE)}")
        return int(port)

    def free_port(self, host: str, port: int | None) -> None:
        if port:
            self.redis.srem(self.ports_key(host), port)

    def ports_taken(self, host: str) -> set[int]:
        return {int(p) for p in self.redis.smembers(self.ports_key(host))}

    # -- locks and job replies ---------------------------------------------------------------

    def lock(self, key: str, ttl: int) -> str | None:
        """A lock that holds across every process of the fleet, until ttl or unlock: the owner's
        token, or None if another holds it."""
        token = secrets.token_hex(8)
        return token if self.redis.set(f"{NS}lock:{key}", token, nx=True, ex=ttl) else None

    def unlock(self, key: str, token: str) -> None:
        """Free a lock we hold; one that expired and was taken by another stays theirs."""
        self._unlock(keys=[f"{NS}lock:{key}"], args=[token])

    @staticmethod
    def waiting_key(job_id: str) -> str:
        """Exists while a caller waits for the job's reply (its TTL is the caller's patience)."""
        return f"{NS}waiting:{job_id}"

    @staticmethod
    def reply_key(job_id: str) -> str:
        return f"{NS}reply:{job_id}"

    def is_waited(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.waiting_key(job_id)))

    def reply(self, job_id: str, body: str) -> bool:
        """Give a job's result to the API process waiting for it; False if nobody waits any more."""
        return bool(self._reply(keys=[self.waiting_key(job_id), self.reply_key(job_id)], args=[body]))

    # -- the fleet's epoch: tells a worker whether Redis lost the state it knew ----------------

    def epoch(self) -> str | None:
        return self.redis.get(f"{NS}epoch")

    def open_epoch(self) -> str:
        """The current epoch, starting one if the store is new (or was wiped)."""
        self.redis.set(f"{NS}epoch", f"{now():.6f}", nx=True)
        return self.redis.get(f"{NS}epoch")

    # -- worker liveness ---------------------------------------------------------------------

    def worker_beat(self, node: str, running: Iterable[str], ttl: int) -> None:
        """A worker process is alive, running these jobs (those older than a beat or two)."""
        pipe = self.redis.pipeline()
        pipe.sadd(f"{NS}workers", node)
        key = f"{NS}worker:{node}"
        pipe.delete(key)
        pipe.hset(key, mapping={"alive": 1, **{job: 1 for job in running}})
        pipe.expire(key, ttl)
        pipe.execute()

    def worker_gone(self, node: str) -> None:
        self.redis.delete(f"{NS}worker:{node}")
        self.redis.srem(f"{NS}workers", node)

    def worker_of(self, job_id: str) -> str | None:
        """The live worker that reported running a job, if any."""
        for node in self.redis.smembers(f"{NS}workers"):
            if self.redis.hexists(f"{NS}worker:{node}", job_id):
                return node
        return None

    def worker_alive(self, node: str) -> bool:
        return bool(self.redis.exists(f"{NS}worker:{node}"))

    def live_workers(self) -> list[str]:
        """The nodes (``role@host:pid``) of the worker processes beating now."""
        return sorted(node for node in self.redis.smembers(f"{NS}workers")
                      if self.worker_alive(node))

    # -- what /metrics and the dashboard read (sandbox_api/metrics.py, dashboard.py) -----------

    def add_metrics(self, increments: dict[str, float], failures: list[dict], keep: int) -> None:
        """Add a worker's buffered counts (fields of sandbox_core.metrics) and recent failures."""
        pipe = self.redis.pipeline(transaction=False)
        for field_name, amount in increments.items():
            pipe.hincrbyfloat(f"{NS}metrics", field_name, amount)
        if failures:
            pipe.lpush(f"{NS}failures", *(json.dumps(f) for f in failures))
            pipe.ltrim(f"{NS}failures", 0, keep - 1)
        pipe.execute()

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.redis.hgetall(f"{NS}metrics").items()}

    def recent_failures(self, limit: int) -> list[dict]:
        return [json.loads(f) for f in self.redis.lrange(f"{NS}failures", 0, limit - 1)]

    def live_summaries(self, names: Iterable[str], wanted: tuple[str, ...]) -> list[dict]:
        """Some fields of many records in one round trip (records gone meanwhile are skipped)."""
        names = list(names)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(self.record_key(name), wanted)
        out = []
        for name, values in zip(names, pipe.execute(), strict=True):
            if any(v is not None for v in values):
                out.append(_decode({"container_name": name, **{
                    k: v for k, v in zip(wanted, values, strict=True) if v is not None}}))
        return out

    def draining_hosts(self) -> list[str]:
        return sorted(k.removeprefix(f"{NS}draining:")
                      for k in self.redis.scan_iter(f"{NS}draining:*", count=500))

    def waiting_jobs(self) -> int:
        """Callers blocked on a job's reply right now, in every API process."""
        return sum(1 for _ in self.redis.scan_iter(f"{NS}waiting:*", count=1000))

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each Celery queue that kombu declared (its Redis transport keeps
        a queue's bindings in ``_kombu.binding.*`` sets and its messages in lists named after it,
        with ``\\x06\\x16<priority>`` suffixes for priorities 3, 6 and 9)."""
        queues: set[str] = set()
        for key in self.redis.scan_iter("_kombu.binding.*", count=500):
            queues.update(m.split("\x06\x16")[-1] for m in self.redis.smembers(key))
        queues = sorted(q for q in queues if q and not q.endswith(".pidbox") and "celeryev" not in q)
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            for suffix in ("", "\x06\x163", "\x06\x166", "\x06\x169"):
                pipe.llen(queue + suffix)
        lengths = pipe.execute()
        return {q: sum(lengths[i * 4:i * 4 + 4]) for i, q in enumerate(queues)}

    def scan_records(self) -> Iterable[dict]:
        for key in self.redis.scan_iter(f"{NS}sandbox:*", count=500):
            data = self.redis.hgetall(key)
            if data:
                yield _decode(data)


_JSON_FIELDS = ("meta", "ports", "environment")
_FLOAT_FIELDS = ("last_active_at", "recycled_at", "released_at", "updated_at", "created_at",
                 "claimed_at")
_INT_FIELDS = ("port", "timeout")


def _encode(fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            value = json.dumps(value)
        elif value is None:
            value = ""
        elif isinstance(value, bool):
            value = int(value)
        out[key] = value
    return out


def _decode(data: dict) -> dict:
    record: dict = dict(data)
    for key in _JSON_FIELDS:
        if record.get(key):
            record[key] = json.loads(record[key])
        else:
            record[key] = None
    for key in _FLOAT_FIELDS:
        record[key] = float(record[key]) if record.get(key) else None
    for key in _INT_FIELDS:
        record[key] = int(record[key]) if record.get(key) else None
    for key, value in list(record.items()):
        if value == "":
            record[key] = None
    return record
