"""The reaper: beat's tick that ends what should end, under a lock, however many beats run.

- Sessions idle past HEARTBEAT_TIMEOUT: their sandboxes are recycled (container gone, workspace
  kept for a restore), each once (a lock per session).
- Records whose deadline passed (one sorted set; a tick reads only what is due): a sandbox with no
  session idle past FLEET_SANDBOX_IDLE_TIMEOUT, any sandbox handed out longer than
  FLEET_SANDBOX_MAX_LIFETIME ago, an E2B sandbox past its time to live (released), a create whose
  worker is gone and whose caller stopped waiting (error).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import jobs, states
from .errors import Unavailable

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger(__name__)

#: A create whose worker is gone is closed after this many create timeouts without progress (a
#: re-sent create gets there within seconds; refill_pools counts a pool create stale as late).
CREATE_GRACE = 2
#: Seconds between looks at a sandbox no limit applies to, so a limit set at a restart reaches it.
LIFETIME_RECHECK = 600.0
#: Records the reaper examines per tick (it runs every WATCHER_SCAN_INTERVAL seconds).
DEADLINES_PER_TICK = 200


def reap(fleet: Fleet) -> int:
    """The reaper's tick: recycle idle sessions, then end what is past its deadline."""
    return _recycle_idle_sessions(fleet) + reap_deadlines(fleet)


def _recycle_idle_sessions(fleet: Fleet) -> int:
    """Recycle the sandboxes of sessions idle past HEARTBEAT_TIMEOUT, each once."""
    reaped = 0
    for ctx_id in fleet.store.idle_sessions(fleet.settings.HEARTBEAT_TIMEOUT):
        lock = fleet.store.lock(f"heartbeat:{ctx_id}", fleet.settings.HEARTBEAT_LOCK_TTL)
        if not lock:
            continue
        try:
            last = fleet.store.heartbeat_of(ctx_id)
            if last is None or last > time.time() - fleet.settings.HEARTBEAT_TIMEOUT:
                continue  # touched while we took the lock
            for name in fleet.store.session_names(ctx_id):
                record = fleet.store.get(name)
                if record and record["state"] == states.RUNNING:
                    fleet.retire(record, states.RECYCLED, "heartbeat_timeout")
                    reaped += 1
            fleet.store.forget_heartbeat(ctx_id)
        finally:
            fleet.store.unlock(f"heartbeat:{ctx_id}", lock)
    return reaped


def reap_deadlines(fleet: Fleet) -> int:
    """End the records whose deadline passed (at most DEADLINES_PER_TICK a tick): a sandbox
    with no session idle past FLEET_SANDBOX_IDLE_TIMEOUT, any sandbox handed out longer than
    FLEET_SANDBOX_MAX_LIFETIME ago (both released), a create whose worker is gone (error).
    Only due records are read: a tick costs one sorted-set read when nothing is due."""
    lock = fleet.store.lock("deadlines", fleet.settings.HEARTBEAT_LOCK_TTL)
    if not lock:
        return 0  # another beat is sweeping
    ended = 0
    try:
        for name in fleet.store.due_deadlines(DEADLINES_PER_TICK):
            record = fleet.store.get(name)
            reason, look_again = _deadline(fleet, record) if record else (None, None)
            if reason:
                ended += _end(fleet, record, reason)
            elif look_again:
                fleet.store.reschedule(name, look_again)
            if reason or not look_again:
                fleet.store.forget_deadline(name)
    finally:
        fleet.store.unlock("deadlines", lock)
    return ended


def _deadline(fleet: Fleet, record: dict) -> tuple[str | None, float | None]:
    """(why the record ends now, or None; else when to look again, or None: never)."""
    state, now = record["state"], time.time()
    if state == states.CREATING:
        return _create_deadline(fleet, record, now)
    if state not in (states.WARM, states.RUNNING):
        return None, None  # released, recycled, replaced, error: nothing holds a slot
    expires = record.get("e2b_expires_at")
    if expires:  # E2B's `timeout` (sandbox_api/e2b): a time to live, not an idle clock;
        # a paused sandbox waits for its resume
        at = now + LIFETIME_RECHECK if record.get("e2b_paused") else float(expires)
        return ("e2b_timeout: its time to live ran out", None) if at <= now else (None, at)
    ends = []
    idle, max_life = fleet.settings.sandbox_idle_timeout, fleet.settings.FLEET_SANDBOX_MAX_LIFETIME
    pooled = state == states.WARM and bool(record.get("pool_type"))
    if max_life:
        # A warm pool sandbox's lifetime starts when it is claimed (at the earliest now).
        start = now if pooled else record.get("claimed_at") or record.get("created_at") or now
        ends.append((start + max_life, f"max_lifetime: handed out over {max_life}s ago"))
    if idle and not pooled and not record.get("session_ctx_id"):
        # A session's idleness is the heartbeat's (recycled, not released: it comes back).
        last = record.get("last_active_at") or record.get("created_at") or now
        ends.append((last + idle, f"idle_timeout: no call for {idle}s"))
    elif idle and pooled:
        ends.append((now + idle, ""))  # claimable at any moment: idle from then on
    if not ends:
        return None, now + LIFETIME_RECHECK  # so a limit set at a restart still reaches it
    at, reason = min(ends)
    return (reason, None) if at <= now and reason else (None, at)


def _create_deadline(fleet: Fleet, record: dict, now: float) -> tuple[str | None, float | None]:
    """A create ends as error once it made no progress for CREATE_GRACE create timeouts, no
    live worker process runs it and no caller waits for it (a re-sent create takes a new owner)."""
    grace = CREATE_GRACE * fleet.create_timeout
    progress = max(record.get("created_at") or 0, record.get("updated_at") or 0)
    # It may start any moment, and its own limits run from then: look again by the first.
    ends = [x for x in (fleet.settings.sandbox_idle_timeout,
                        fleet.settings.FLEET_SANDBOX_MAX_LIFETIME) if x]
    soonest = now + min(ends, default=fleet.create_timeout)
    if now < progress + grace:
        return None, min(progress + grace, soonest)
    owner = record.get("creating_on")
    job = record.get("create_job")
    if (owner and fleet.store.worker_alive(owner)) or (job and fleet.store.is_waited(job)):
        # slow, but its worker is on it, or its caller still waits (and re-sends it)
        return None, min(now + fleet.create_timeout, soonest)
    why = f"worker {owner} is gone" if owner else "no worker took it"
    return f"create_deadline: not created within {grace:g}s and {why}", None


def _end(fleet: Fleet, record: dict, reason: str) -> int:
    """Release a live record, or close a create as error; 1 if this call did it."""
    name = record["container_name"]
    state = states.ERROR if record["state"] == states.CREATING else states.RELEASED
    if fleet.store.retire(record, states.RELEASED) is None:
        return 0  # ended meanwhile
    fleet.store.update(name, state=state, recycle_reason=reason)
    if state == states.ERROR and record.get("pool_type"):
        fleet.store.pool_abandon(record["pool_type"], name, jobs.encode_reply(
            error=Unavailable(f"a {record['pool_type']} sandbox could not be started: {reason}")))
    if record.get("host"):  # its worker tears the container down (and gives the port back)
        fleet.job_client.send(jobs.TEARDOWN, {"name": name, "keep_workspace": False},
                       host=record["host"])
    log.info("sandbox %s: %s (%s)", name, state, reason)
    return 1
