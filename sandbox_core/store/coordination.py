"""What the fleet's processes tell each other: job replies, locks, worker liveness, draining
hosts, the store's epoch, E2B streams, failed authentications."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable

from . import keys
from .base import StoreBase, now


class Coordination(StoreBase):
    # -- job replies (sandbox_core.jobs) -----------------------------------------------------

    def expect_reply(self, job_id: str, patience: float) -> None:
        """A caller starts waiting for a job's reply, for ``patience`` seconds at most."""
        self.redis.set(keys.waiting(job_id), "1", ex=max(1, int(patience)))

    def stop_waiting(self, job_id: str) -> bool:
        """The caller gives up; False if it was no longer waiting (a reply was handed over)."""
        return bool(self.redis.delete(keys.waiting(job_id)))

    def is_waited(self, job_id: str) -> bool:
        return bool(self.redis.exists(keys.waiting(job_id)))

    def reply(self, job_id: str, body: str) -> bool:
        """Give a job's result to the API process waiting for it; False if nobody waits any more."""
        return bool(self.scripts.reply(keys=[keys.waiting(job_id), keys.reply(job_id)], args=[body]))

    def pop_reply(self, job_id: str, timeout: float) -> str | None:
        """Block up to ``timeout`` seconds for the job's reply."""
        popped = self.redis.blpop(keys.reply(job_id), timeout=timeout)
        return popped[1] if popped else None

    # -- locks -------------------------------------------------------------------------------

    def lock(self, key: str, ttl: int) -> str | None:
        """A lock that holds across every process of the fleet, until ttl or unlock: the owner's
        token, or None if another holds it."""
        token = secrets.token_hex(8)
        return token if self.redis.set(keys.lock(key), token, nx=True, ex=ttl) else None

    def unlock(self, key: str, token: str) -> None:
        """Free a lock we hold; one that expired and was taken by another stays theirs."""
        self.scripts.unlock(keys=[keys.lock(key)], args=[token])

    # -- the fleet's epoch: tells a worker whether Redis lost the state it knew ----------------

    def epoch(self) -> str | None:
        return self.redis.get(keys.EPOCH)

    def open_epoch(self) -> str:
        """The current epoch, starting one if the store is new (or was wiped)."""
        self.redis.set(keys.EPOCH, f"{now():.6f}", nx=True)
        return self.redis.get(keys.EPOCH)

    # -- worker liveness (sandbox_workers.liveness) -------------------------------------------

    def worker_beat(self, node: str, running: Iterable[str], ttl: int) -> None:
        """A worker process is alive, holding these jobs."""
        pipe = self.redis.pipeline()
        pipe.sadd(keys.WORKERS, node)
        key = keys.worker(node)
        pipe.delete(key)
        pipe.hset(key, mapping={"alive": 1, **{job: 1 for job in running}})
        pipe.expire(key, ttl)
        pipe.execute()

    def worker_gone(self, node: str) -> None:
        self.redis.delete(keys.worker(node))
        self.redis.srem(keys.WORKERS, node)

    def worker_of(self, job_id: str) -> str | None:
        """The live worker that reported holding a job, if any."""
        for node in self.redis.smembers(keys.WORKERS):
            if self.redis.hexists(keys.worker(node), job_id):
                return node
        return None

    def worker_alive(self, node: str) -> bool:
        return bool(self.redis.exists(keys.worker(node)))

    def live_workers(self) -> list[str]:
        """The nodes (``role@host:pid``) of the worker processes beating now."""
        return sorted(node for node in self.redis.smembers(keys.WORKERS) if self.worker_alive(node))

    # -- draining hosts ----------------------------------------------------------------------

    def start_draining(self, host: str, ttl: int) -> None:
        """A host is shutting down: its workers start no more creates (until ttl or stop_draining)."""
        self.redis.set(keys.draining(host), "1", ex=max(1, int(ttl)))

    def stop_draining(self, host: str) -> None:
        self.redis.delete(keys.draining(host))

    def is_draining(self, host: str) -> bool:
        return bool(self.redis.exists(keys.draining(host)))

    def draining_hosts(self) -> list[str]:
        prefix = keys.draining("")
        return sorted(k.removeprefix(prefix) for k in self.redis.scan_iter(prefix + "*", count=500))

    # -- E2B streams: a worker relays, an API process listens (sandbox_api/e2b/streams.py) ----

    def listen(self, stream_id: str, ttl: float) -> None:
        """The API still listens to a stream (for ``ttl`` seconds unless said again)."""
        self.redis.set(keys.listen(stream_id), "1", ex=max(1, int(ttl)))

    def stop_listening(self, stream_id: str) -> None:
        self.redis.delete(keys.listen(stream_id))

    def is_listened(self, stream_id: str) -> bool:
        return bool(self.redis.exists(keys.listen(stream_id)))

    def push_to_stream(self, stream_id: str, message: dict, ttl: int) -> None:
        """One message for the listener; the list outlives its last push by ``ttl`` seconds."""
        key = keys.stream(stream_id)
        self.redis.pipeline().rpush(key, json.dumps(message)).expire(key, ttl).execute()

    def pop_from_stream(self, stream_id: str, timeout: float) -> dict | None:
        popped = self.redis.blpop(keys.stream(stream_id), timeout=timeout)
        return json.loads(popped[1]) if popped else None

    # -- failed authentications (sandbox_api/auth.py) ----------------------------------------

    def count_auth_failure(self, address: str, window: int) -> int:
        """One more wrong token from ``address``; how many it sent in the current window."""
        key = keys.authfail(address)
        failures, _ = self.redis.pipeline().incr(key).expire(key, window, nx=True).execute()
        return int(failures)
