"""Sessions (upstream's session_ctx_id): their sandboxes and heartbeats."""

from __future__ import annotations

from . import keys
from .base import StoreBase, now


class Sessions(StoreBase):
    def join_session(self, name: str, session_ctx_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.sadd(keys.session(session_ctx_id), name)
        pipe.sadd(keys.SESSIONS, session_ctx_id)
        pipe.zadd(keys.HEARTBEATS, {session_ctx_id: now()})
        pipe.execute()

    def leave_session(self, name: str, session_ctx_id: str) -> None:
        self.redis.srem(keys.session(session_ctx_id), name)

    def session_names(self, session_ctx_id: str) -> list[str]:
        return sorted(self.redis.smembers(keys.session(session_ctx_id)))

    def session_keys(self) -> list[str]:
        return sorted(self.redis.smembers(keys.SESSIONS))

    def touch(self, session_ctx_id: str) -> list[str]:
        """Heartbeat a session; returns the names of its recycled sandboxes, to restore."""
        return self.scripts.touch(keys=[keys.session(session_ctx_id), keys.HEARTBEATS],
                                  args=[keys.NS, session_ctx_id, now()])

    def idle_sessions(self, idle_for: float) -> list[str]:
        return self.redis.zrangebyscore(keys.HEARTBEATS, "-inf", now() - idle_for)

    def heartbeat_of(self, session_ctx_id: str) -> float | None:
        return self.redis.zscore(keys.HEARTBEATS, session_ctx_id)

    def forget_heartbeat(self, session_ctx_id: str) -> None:
        self.redis.zrem(keys.HEARTBEATS, session_ctx_id)
