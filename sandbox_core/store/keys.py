"""The fleet's Redis key layout: the one place that names a key (``N`` = ``sandbox_fleet:``).

  N sandbox:<name>         hash   the record (fields of upstream's ContainerModel, plus host/port)
  N live                   set    names that count toward MAX_SANDBOX_INSTANCES
  N host:<host>            set    names whose container lives on that host
  N session:<ctx>          set    names in a session (upstream's session_mapping)
  N sessions               set    session ids with at least one sandbox
  N heartbeats             zset   session id -> last touch (the reaper reads only the expired)
  N pool_pending:<type>    zset   pooled creates in flight -> start time
  N pool_waiters:<type>    list   claims (job ids) waiting for the next pooled create, oldest first
  N deadlines              zset   record name -> when the reaper next looks at its lifetime
  N draining:<host>        string set while a host shuts down: its workers start no creates
  N workers                set    worker processes that beat (or did)
  N worker:<node>          hash   a live worker process and the jobs it holds (TTL: its heartbeat)
  N waiting:<job>          string exists while a caller waits for the job's reply (TTL: its patience);
                                  a claim waiting for the pool keeps its session and meta in it
  N reply:<job>            list   the job's reply, pushed once
  N lock:<what>            string a lock's owner token (TTL: the lock's lifetime)
  N epoch                  string when this store's state began (a worker sees a Redis loss by it)
  N authfail:<address>     string wrong tokens from a client address in the current minute
  N e2b:stream:<id>        list   an E2B stream's messages, relayed by a worker to an API process
  N e2b:listen:<id>        string set while an API process still listens to that stream
  N metrics                hash   the workers' counters and histograms (sandbox_core.metrics)
  N failures               list   the latest failed creates, teardowns and calls, newest first
  <REDIS_CONTAINER_POOL_KEY>:<type>  list  warm sandboxes ready to claim (upstream's name)
  <REDIS_PORT_KEY>:<host>            set   ports taken on that host (upstream's name)
"""

from __future__ import annotations

NS = "sandbox_fleet:"

LIVE = f"{NS}live"
SESSIONS = f"{NS}sessions"
HEARTBEATS = f"{NS}heartbeats"
DEADLINES = f"{NS}deadlines"
WORKERS = f"{NS}workers"
EPOCH = f"{NS}epoch"
METRICS = f"{NS}metrics"
FAILURES = f"{NS}failures"
#: The prefix a worker's key starts with (the Lua scripts add the node).
WORKER_PREFIX = f"{NS}worker:"


def record(name: str) -> str:
    return f"{NS}sandbox:{name}"


def host(name: str) -> str:
    return f"{NS}host:{name}"


def session(ctx: str) -> str:
    return f"{NS}session:{ctx}"


def pool_pending(sandbox_type: str) -> str:
    return f"{NS}pool_pending:{sandbox_type}"


def pool_waiters(sandbox_type: str) -> str:
    return f"{NS}pool_waiters:{sandbox_type}"


def draining(host_name: str) -> str:
    return f"{NS}draining:{host_name}"


def worker(node: str) -> str:
    return f"{WORKER_PREFIX}{node}"


def waiting(job_id: str) -> str:
    return f"{NS}waiting:{job_id}"


def reply(job_id: str) -> str:
    return f"{NS}reply:{job_id}"


def lock(what: str) -> str:
    return f"{NS}lock:{what}"


def authfail(address: str) -> str:
    return f"{NS}authfail:{address}"


def stream(stream_id: str) -> str:
    return f"{NS}e2b:stream:{stream_id}"


def listen(stream_id: str) -> str:
    return f"{NS}e2b:listen:{stream_id}"


def pool(pool_prefix: str, sandbox_type: str) -> str:
    """``pool_prefix`` is REDIS_CONTAINER_POOL_KEY."""
    return f"{pool_prefix}:{sandbox_type}"


def ports(ports_prefix: str, host_name: str) -> str:
    """``ports_prefix`` is REDIS_PORT_KEY."""
    return f"{ports_prefix}:{host_name}"
