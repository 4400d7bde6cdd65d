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
        """Take a place in a type's pool for a create in flight; False if the pool is full."""
        result = self.scripts.reserve_pool(
            keys=[self.pool_key(sandbox_type), keys.pool_pending(sandbox_type), keys.LIVE],
            args=[name, self.settings.POOL_SIZE, self.settings.MAX_SANDBOX_INSTANCES, now(),
                  stale_after])
        return result == 1

    def pool_add(self, sandbox_type: str, name: str) -> None:
        """A pooled create finished: its sandbox becomes claimable."""
        pipe = self.redis.pipeline()
        pipe.zrem(keys.pool_pending(sandbox_type), name)
        pipe.rpush(self.pool_key(sandbox_type), name)
        pipe.execute()

    def pool_abandon(self, sandbox_type: str, name: str) -> None:
        self.redis.zrem(keys.pool_pending(sandbox_type), name)

    def pool_size(self, sandbox_type: str) -> int:
        return self.redis.llen(self.pool_key(sandbox_type))

    def pool_starting(self, sandbox_type: str) -> int:
        return self.redis.zcard(keys.pool_pending(sandbox_type))

    def claim(self, sandbox_type: str, session_ctx_id: str | None, meta: dict | None) -> str | None:
        """Atomically take a warm sandbox of a type for a session; None on a miss."""
        return self.scripts.claim(
            keys=[self.pool_key(sandbox_type), keys.SESSIONS, keys.HEARTBEATS],
            args=[keys.NS, session_ctx_id or "", json.dumps(meta or {}), now()])

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
