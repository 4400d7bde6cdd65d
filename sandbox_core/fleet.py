"""The fleet's operations, as the API, beat and the server command ask for them.

This layer writes records and sends jobs; it never touches a container runtime. Workers do that, on
the host that owns the sandbox.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from . import jobs, limits, reaper, states
from .celery_app import make_celery
from .errors import BadRequest, CapacityExceeded, NotFound, Unavailable
from .ids import new_session_id
from .jobs import JobClient
from .nudged import Nudged
from .registry import base_type, get_spec
from .settings import Settings
from .store import Store
from .store.records import MAX_REDIRECTS

log = logging.getLogger(__name__)

#: Extra seconds a caller waits for a create beyond the sandbox's own start timeout (queueing).
QUEUE_SLACK = 30
#: The agent enforces a tool's timeout; the caller waits a little longer for the reply to travel.
CALL_SLACK = 10
#: Lifetime (s) of a call's waiting flag, set before its timeout is known (it is in the record
#: read in the same round trip): the longest a call job may run (sandbox_workers.tasks.agent).
#: The flag goes with the reply, or when the caller gives up; this bounds only a dead caller's.
CALL_PATIENCE = 3700
#: Seconds between two heartbeat writes of a busy session.
TOUCH_EVERY = 1.0
#: Creates one refill sends beyond POOL_SIZE for claims waiting on an empty pool (more wait for
#: the next refill: a nudge, or beat's tick).
MAX_REFILL_FOR_WAITERS = 256


class Fleet:
    def __init__(self, settings: Settings, store: Store, job_client: JobClient) -> None:
        self.settings = settings
        self.store = store
        self.job_client = job_client

    @classmethod
    def connect(cls, settings: Settings, name: str = "sandbox_fleet") -> Fleet:
        """A Fleet with its own Redis connection pool and Celery client (nothing connects yet)."""
        store = Store.connect(settings)
        return cls(settings, store, JobClient(make_celery(settings, name), store))

    @property
    def create_timeout(self) -> float:
        return self.settings.FLEET_CREATE_TIMEOUT + QUEUE_SLACK

    # -- acquiring ---------------------------------------------------------------------------

    def default_type(self) -> str:
        return self.settings.DEFAULT_SANDBOX_TYPE[0]

    def acquire(self, sandbox_type: str | None, meta: dict | None) -> str:
        """A warm sandbox of the type if one is pooled, else a new one (create_from_pool)."""
        sandbox_type = sandbox_type or self.default_type()
        get_spec(self.settings, sandbox_type)  # unknown types are the client's mistake: 400
        pooled = base_type(sandbox_type)
        if pooled in self.settings.DEFAULT_SANDBOX_TYPE and self.settings.POOL_SIZE > 0:
            name = self._claim(pooled, meta)
            if self.settings.STORAGE_FOLDER:
                # Given at the claim, not the refill: a pooled sandbox no client used has
                # nothing worth a folder in STORAGE_FOLDER.
                session_id = name.removeprefix(self.settings.CONTAINER_PREFIX_KEY)
                self.store.update(name, storage_path=self._storage_path(None, session_id))
            return name
        return self.create(sandbox_type, meta=meta)

    def _claim(self, pooled: str, meta: dict | None) -> str:
        """A warm sandbox of the pool, or else the next one a pooled create finishes: claims that
        find the pool empty queue, first come first served, and each is given the oldest create
        in flight, so a burst past the pool waits only as long as the host takes to start that
        many. Every claim has the pool topped up again at once (``refill_pools``, off the
        request's thread), so arrivals slower than the host's creates never find it empty."""
        job_id = uuid.uuid4().hex
        name, reserved = self.store.claim_or_wait(
            pooled, _session_of(meta), meta, job_id=job_id, patience=self.create_timeout + 5,
            candidate=self.settings.CONTAINER_PREFIX_KEY + new_session_id(),
            stale_after=self.create_timeout * 2)
        self.refiller.nudge()
        if name:
            log.info("sandbox %s: taken from the %s pool", name, pooled)
            return name
        if reserved:  # no create in flight was spare for this claim: one was reserved for it
            self._send_pool_create(pooled, reserved)
        name = self.job_client.await_reply(job_id, self.create_timeout,
                                           f"no {pooled} sandbox became free")
        log.info("sandbox %s: taken from the %s pool as it started", name, pooled)
        return name

    def create(self, sandbox_type: str | None, *, environment: dict | None = None,
               meta: dict | None = None, mount_dir: str | None = None,
               storage_path: str | None = None, resource_limits: dict | None = None) -> str:
        """Create a sandbox and wait until its agent answers; returns its name."""
        sandbox_type = sandbox_type or self.default_type()
        spec = get_spec(self.settings, sandbox_type)
        own_limits = limits.requested(self.settings, resource_limits)
        for key, value in (environment or {}).items():
            if value is None:
                raise BadRequest(f"environment.{key} is null; give it a string value")
        if mount_dir and not self.settings.ALLOW_MOUNT_DIR:
            mount_dir = None  # as upstream: only ALLOW_MOUNT_DIR lets a client pick the folder
        session_id = new_session_id()
        name = self.settings.CONTAINER_PREFIX_KEY + session_id
        storage_path = self._storage_path(storage_path, session_id)
        self.store.open_record(
            name, session_id=session_id, sandbox_type=sandbox_type, meta=meta or {},
            session_ctx_id=_session_of(meta), environment={k: str(v) for k, v in
                                                           (environment or {}).items()},
            mount_dir=mount_dir, workspace_owned=not mount_dir, storage_path=storage_path,
            version=spec.image, desktop_token=secrets.token_hex(16), timeout=spec.timeout,
            memory=own_limits.get("memory"), cpus=own_limits.get("cpu"),
            create_job=(job_id := uuid.uuid4().hex))
        self._reserve(name)
        return self.job_client.run(jobs.CREATE, {"name": name}, self.create_timeout, job_id=job_id,
                             resend_if_lost=True)

    def _storage_path(self, requested: str | None, session_id: str) -> str | None:
        """Where the workspace is kept: STORAGE_FOLDER/<id>, or the client's path inside
        STORAGE_FOLDER (upstream let a client name any host path: read /etc, or write anywhere)."""
        folder = self.settings.STORAGE_FOLDER
        if not folder:
            if requested:
                raise BadRequest("storage_path needs STORAGE_FOLDER to be set on the server")
            return None
        join, norm = ((posixpath.join, posixpath.normpath) if self.settings.FILE_SYSTEM == "oss"
                      else (os.path.join, os.path.normpath))
        root = norm(folder if self.settings.FILE_SYSTEM == "oss" else os.path.abspath(folder))
        path = norm(join(root, requested or session_id))
        if not path.startswith(root.rstrip("/") + "/"):
            raise BadRequest(f"storage_path {requested!r} must stay inside STORAGE_FOLDER")
        return path

    def _reserve(self, name: str) -> None:
        """Take an instance slot for a record just opened; without one the record goes."""
        try:
            self.store.reserve_instance(name)
        except CapacityExceeded:
            self.store.delete(name)
            raise

    # -- using -------------------------------------------------------------------------------

    def live_record(self, identity: str, touch: bool = False,
                    expect_reply: tuple[str, float] | None = None) -> dict:
        """The live record an identity points at (following redirects), or NotFound.

        With ``touch``, the session's heartbeat is recorded and a recycled sandbox is restored;
        ``expect_reply`` is the store's (``Store.find``).
        """
        record = self.store.find(_identity(identity), expect_reply=expect_reply)
        if record is None:
            raise NotFound(f"sandbox not found: {identity}")
        # A heartbeat a second old is fresh enough: the reaper works in HEARTBEAT_TIMEOUT units,
        # and skipping the write keeps a burst of calls at one Redis read each.
        fresh = time.time() - (record.get("last_active_at") or 0) < TOUCH_EVERY
        if touch and record.get("session_ctx_id") and (record["state"] != states.RUNNING or not fresh):
            for recycled in self.store.touch(record["session_ctx_id"]):
                self.restore(recycled)
            if record["state"] == states.RECYCLED:
                record = self.store.find(record["container_name"]) or record
        elif touch and not fresh and not record.get("session_ctx_id") and \
                record["state"] in (states.RUNNING, states.WARM):
            self.store.touch_sandbox(record["container_name"])  # no session: its own idle clock
        if record["state"] not in (states.RUNNING, states.WARM):
            raise NotFound(f"sandbox {record['container_name']} is {record['state']}")
        return record

    def agent_call(self, identity: str, op: str, timeout: float | None = None,
                   touch: bool = True, **payload: Any) -> Any:
        """Carry one request into a sandbox through its host's call queue."""
        job_id = uuid.uuid4().hex
        try:  # one round trip reads the record and says that its reply is awaited
            record = self.live_record(identity, touch=touch, expect_reply=(job_id, CALL_PATIENCE))
        except NotFound:
            self.store.stop_waiting(job_id)
            raise
        timeout = timeout or record.get("timeout") or self.settings.RUNTIME_SANDBOX_TIMEOUT
        return self.job_client.run(
            jobs.AGENT, {"name": record["container_name"], "op": op, "timeout": timeout, **payload},
            timeout + CALL_SLACK, host=record["host"], job_id=job_id, awaited=True)

    def control(self, identity: str, op: str) -> Any:
        """start / stop / status of a sandbox's container, on its host."""
        record = self.store.find(_identity(identity))
        if record is None or not record.get("host"):
            raise NotFound(f"sandbox not found: {identity}")
        return self.job_client.run(jobs.CONTROL, {"name": record["container_name"], "op": op}, 60,
                             host=record["host"])

    # -- releasing ---------------------------------------------------------------------------

    def release(self, identity: str) -> bool:
        """Mark released at once and send the teardown to the owning host. Unknown ids: True."""
        record = self.store.find(_identity(identity), follow=False)
        hops = 0
        while record is not None and hops <= MAX_REDIRECTS:
            self.retire(record, states.RELEASED)
            target = record.get("redirect_to")
            record = self.store.get(target) if target else None
            hops += 1
        return True

    def retire(self, record: dict, state: str, reason: str = "") -> None:
        """Release or recycle a live record once, and send its teardown to its host."""
        if record["state"] in (states.REPLACED, states.RECYCLED) and state == states.RELEASED:
            self.store.update(record["container_name"], state=states.RELEASED,
                              released_at=time.time())
            return
        previous = self.store.retire(record, state, reason)
        if previous is None or not record.get("host"):
            return  # not live, or no worker has it yet: the create itself will notice
        self.job_client.send(jobs.TEARDOWN, {"name": record["container_name"],
                                       "keep_workspace": state == states.RECYCLED},
                       host=record["host"])
        log.info("sandbox %s: %s%s", record["container_name"], state, f" ({reason})" if reason else "")

    def cleanup(self, host: str | None = None) -> int:
        """Release every live sandbox (of one host, if given). Returns how many."""
        names = self.store.host_names(host) if host else self.store.live_names()
        count = 0
        for name in names:
            record = self.store.get(name)
            if record and record["state"] in states.LIVE_STATES:
                self.release(name)
                count += 1
        return count

    def drain(self, host: str, timeout: float, workers_alive: Callable[[], bool] = lambda: True) -> int:
        """Release every sandbox of a host and wait until its workers tore them down (creates that
        were already queued finish first, then go too). Returns how many are left."""
        deadline = time.monotonic() + timeout
        # From now on the host's workers start no create (a refill another host's beat sent, or a
        # client's): each one either is in host_names below, and torn down, or never starts.
        self.store.start_draining(host, int(timeout) + 60)
        self.cleanup(host)
        while self.store.host_names(host) and time.monotonic() < deadline and workers_alive():
            time.sleep(0.2)
            self.cleanup(host)
        return len(self.store.host_names(host))

    def status(self) -> dict:
        """What an operator wants at a glance: pools, live sandboxes, the cap."""
        pools = {}
        for pooled in dict.fromkeys(base_type(t) for t in self.settings.DEFAULT_SANDBOX_TYPE):
            pools[pooled] = {"warm": self.store.pool_size(pooled),
                             "starting": self.store.pool_starting(pooled),
                             "waiting": self.store.pool_waiting(pooled),
                             "target": self.settings.POOL_SIZE}
        return {"pools": pools, "live": self.store.live_count(),
                "max_instances": self.settings.MAX_SANDBOX_INSTANCES,
                "sessions": len(self.store.session_keys())}

    # -- lifecycle: recycling, restoring, pools -----------------------------------------------

    def reap_idle(self) -> int:
        """The reaper's tick (beat's job): see sandbox_core.reaper."""
        return reaper.reap(self)

    def restore(self, old_name: str) -> str:
        """Bring a recycled sandbox back as a new one on the same host with the same workspace."""
        lock = self.store.lock(f"restore:{old_name}", int(self.create_timeout))
        if not lock:
            return self._await_restore(old_name)
        try:
            old = self.store.get(old_name)
            if old is None or old["state"] != states.RECYCLED:
                return (old or {}).get("redirect_to") or old_name
            session_id = new_session_id()
            name = self.settings.CONTAINER_PREFIX_KEY + session_id
            self.store.open_record(
                name, session_id=session_id, sandbox_type=old["sandbox_type"], meta=old["meta"],
                session_ctx_id=old.get("session_ctx_id"), environment=old.get("environment") or {},
                mount_dir=old.get("mount_dir"), workspace_owned=old.get("workspace_owned") != "0",
                storage_path=old.get("storage_path"), version=old.get("version"),
                desktop_token=secrets.token_hex(16), timeout=old.get("timeout"),
                memory=old.get("memory"), cpus=old.get("cpus"),
                create_job=(job_id := uuid.uuid4().hex))
            self._reserve(name)
            log.info("sandbox %s: restoring as %s", old_name, name)
            return self.job_client.run(jobs.CREATE, {"name": name, "replaces": old_name},
                                 self.create_timeout, host=old["host"], job_id=job_id,
                                 resend_if_lost=True)
        finally:
            self.store.unlock(f"restore:{old_name}", lock)

    def _await_restore(self, old_name: str) -> str:
        """Another request is restoring this sandbox: wait for it to finish (bounded)."""
        deadline = time.monotonic() + self.create_timeout
        while time.monotonic() < deadline:
            old = self.store.get(old_name)
            if old and old.get("redirect_to"):
                return old["redirect_to"]
            time.sleep(0.05)
        raise Unavailable(f"sandbox {old_name} is being restored; try again")

    def refill_pools(self) -> int:
        """Top every pooled type up to POOL_SIZE plus the claims waiting for one (creates in
        flight count); returns how many creates were sent."""
        sent = 0
        for pooled in dict.fromkeys(base_type(t) for t in self.settings.DEFAULT_SANDBOX_TYPE):
            for _ in range(self.settings.POOL_SIZE + MAX_REFILL_FOR_WAITERS):
                name = self.settings.CONTAINER_PREFIX_KEY + new_session_id()
                if not self.store.reserve_pool_slot(pooled, name, self.create_timeout * 2):
                    break
                self._send_pool_create(pooled, name)
                sent += 1
        return sent

    @functools.cached_property
    def refiller(self) -> Nudged:
        """refill_pools in a thread of its own, nudged by every claim."""
        return Nudged(self.refill_pools, "pool-refill")

    def _send_pool_create(self, pooled: str, name: str) -> None:
        """Open the record of a pooled create whose slot was reserved, and send it to the
        shared queue (the first host with a free thread starts it)."""
        spec = get_spec(self.settings, pooled)
        self.store.open_record(
            name, session_id=name.removeprefix(self.settings.CONTAINER_PREFIX_KEY),
            sandbox_type=pooled, pool_type=pooled, meta={}, version=spec.image,
            timeout=spec.timeout, workspace_owned=True, desktop_token=secrets.token_hex(16))
        self.job_client.send(jobs.CREATE, {"name": name})


def _session_of(meta: dict | None) -> str | None:
    value = (meta or {}).get("session_ctx_id")
    return str(value) if value else None


def _identity(identity: Any) -> str:
    if not isinstance(identity, str) or not identity:
        raise BadRequest("identity must be a non-empty string (a sandbox name or id)")
    return identity


def public_info(record: dict) -> dict:
    """A record as /get_info shows it: upstream's ContainerModel, minus the in-sandbox secret."""
    return {
        "session_id": record.get("session_id"),
        "container_id": record.get("container_id"),
        "container_name": record.get("container_name"),
        "url": record.get("url"),
        "ports": record.get("ports") or [],
        "mount_dir": record.get("mount_dir"),
        "storage_path": record.get("storage_path"),
        # The SDK reads this only to open the GUI desktop; it is a desktop-only token, never the
        # sandbox's SECRET_TOKEN.
        "runtime_token": record.get("desktop_token"),
        "version": record.get("version"),
        "meta": record.get("meta") or {},
        "timeout": record.get("timeout"),
        "sandbox_type": record.get("sandbox_type"),
        "state": record.get("state"),
        "session_ctx_id": record.get("session_ctx_id"),
        "last_active_at": record.get("last_active_at"),
        "recycled_at": record.get("recycled_at"),
        "released_at": record.get("released_at"),
        "updated_at": record.get("updated_at"),
        "recycle_reason": record.get("recycle_reason"),
        "redirect_to": record.get("redirect_to"),
        "host": record.get("host"),
    }
