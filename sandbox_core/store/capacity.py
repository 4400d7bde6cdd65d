"""What is scarce: instance slots under MAX_SANDBOX_INSTANCES, warm pools, each host's ports."""

from __future__ import annotations

import json

from ..errors import CapacityExceeded
from . import keys
from .base import StoreBase, now


class Capacity(StoreBase):
    # -- instance slots ----------------------------------------------------------------------

    def reserve_instance(self, name: str) -> None:
        """Take one slot under MAX_SANDBOX_INSTANCES, or raise CapacityExceeded."""
        if not self.scripts.reserve(keys=[keys.LIVE],
                                    args=[name, self.settings.MAX_SANDBOX_INSTANCES]):
            raise CapacityExceeded(
                f"MAX_SANDBOX_INSTANCES={self.settings.MAX_SANDBOX_INSTANCES} sandboxes are live")

    def hold_instance(self, name: str) -> None:
        """Count a sandbox found running (adopted after a Redis loss), cap or not: it exists."""
        self.redis.sadd(keys.LIVE, name)

    def give_back_instance(self, name: str) -> None:
        self.redis.srem(keys.LIVE, name)

    def live_count(self) -> int:
        return self.redis.scard(keys.LIVE)

    def live_names(self) -> set[str]:
        return self.redis.smembers(keys.LIVE)

    # -- warm pools --------------------------------------------------------------------------

    def reserve_pool_slot(self, sandbox_type: str, name: str, stale_after: float) -> bool:
        """Take a place in a type's pool for a create in flight; False if the pool is full (warm
        and starting sandboxes reach POOL_SIZE plus the claims waiting for one)."""
        result = self.scripts.reserve_pool(
            keys=[self.pool_key(sandbox_type), keys.pool_pending(sandbox_type), keys.LIVE,
                  keys.pool_waiters(sandbox_type)],
            args=[name, self.settings.POOL_SIZE, self.settings.MAX_SANDBOX_INSTANCES, now(),
                  stale_after, keys.NS])
        return result == 1

    def pool_ready(self, sandbox_type: str, name: str, reply: str) -> str:
        """A pooled create finished (its record is warm): it goes to the oldest claim waiting
        for one (which gets ``reply``), else into the pool. Returns ``handed``, ``pooled``,
        ``surplus`` (the pool is full: release it) or ``gone`` (released meanwhile)."""
        outcome = self.scripts.pool_ready(
            keys=[keys.record(name), keys.pool_pending(sandbox_type), keys.pool_waiters(sandbox_type),
                  self.pool_key(sandbox_type), keys.SESSIONS, keys.HEARTBEATS],
            args=[keys.NS, name, self.settings.POOL_SIZE, now(), reply])
        return ("pooled", "handed", "surplus", "gone")[int(outcome[0])]

    def pool_abandon(self, sandbox_type: str, name: str, reply: str) -> bool:
        """A pooled create failed or was closed: it stops counting as starting, and if the
        waiting claims now outnumber the creates in flight, the oldest gets ``reply`` (the
        error), as its own create's failure would have told it. True if one did."""
        return bool(self.scripts.abandon(
            keys=[keys.pool_pending(sandbox_type), keys.pool_waiters(sandbox_type)],
            args=[keys.NS, name, reply]))

    def pool_size(self, sandbox_type: str) -> int:
        return self.redis.llen(self.pool_key(sandbox_type))

    def pool_starting(self, sandbox_type: str) -> int:
        return self.redis.zcard(keys.pool_pending(sandbox_type))

    def pool_waiting(self, sandbox_type: str) -> int:
        """Claims queued for the pool's next sandbox (some may have given up a moment ago)."""
        return self.redis.llen(keys.pool_waiters(sandbox_type))

    def claim(self, sandbox_type: str, session_ctx_id: str | None, meta: dict | None) -> str | None:
        """Atomically take a warm sandbox of a type for a session; None on a miss."""
        return self.scripts.claim(
            keys=[self.pool_key(sandbox_type), keys.SESSIONS, keys.HEARTBEATS],
            args=[keys.NS, session_ctx_id or "", json.dumps(meta or {}), now()])

    def claim_or_wait(self, sandbox_type: str, session_ctx_id: str | None, meta: dict | None, *,
                      job_id: str, patience: float, candidate: str,
                      stale_after: float) -> tuple[str | None, str | None]:
        """Take a warm sandbox of a type for a session, or queue the claim (as job ``job_id``,
        for ``patience`` seconds) for the next pooled create to finish, first come first served.

        Returns ``(name, None)`` when one was warm; ``(None, reserved)`` when queued, where
        ``reserved`` is ``candidate`` if a create was reserved for this claim (the caller opens
        and sends it) or None if one in flight is spare already. Raises CapacityExceeded when
        none is spare and MAX_SANDBOX_INSTANCES are live."""
        outcome = self.scripts.claim_or_wait(
            keys=[self.pool_key(sandbox_type), keys.SESSIONS, keys.HEARTBEATS,
                  keys.pool_pending(sandbox_type), keys.pool_waiters(sandbox_type), keys.LIVE],
            args=[keys.NS, session_ctx_id or "", json.dumps(meta or {}), now(), job_id,
                  max(1, int(patience)), candidate, self.settings.MAX_SANDBOX_INSTANCES,
                  stale_after])
        if int(outcome[0]) == 0:
            raise CapacityExceeded(
                f"MAX_SANDBOX_INSTANCES={self.settings.MAX_SANDBOX_INSTANCES} sandboxes are live")
        if int(outcome[0]) == 1:
            return outcome[1], None
        return None, outcome[1] or None

    # -- ports -------------------------------------------------------------------------------

    def take_port(self, host: str, name: str, offset: int) -> int:
        """A port of the host's range for sandbox ``name``, written into its record atomically."""
        start, end = self.settings.PORT_RANGE
        port = self.scripts.take_port(keys=[self.ports_key(host), keys.record(name)],
                                      args=[start, end, offset])
        if not port:
            raise CapacityExceeded(f"no free port left in PORT_RANGE {list(self.settings.PORT_RANGE)}")
        return int(port)

    def hold_port(self, host: str, port: int) -> None:
        """Mark a port taken that a sandbox found running already holds (adoption)."""
        self.redis.sadd(self.ports_key(host), port)

    def free_port(self, host: str, port: int | None) -> None:
        if port:
            self.redis.srem(self.ports_key(host), port)

    def ports_taken(self, host: str) -> set[int]:
        return {int(p) for p in self.redis.smembers(self.ports_key(host))}
