"""The fleet's state in Redis: the only code that knows its keys (``keys.py`` lists them all).

Every step that must not interleave with another process (claiming a warm sandbox, taking an
instance slot or a port, releasing) is one Lua script (``scripts.py``), so it holds across any
number of API and worker processes. ``Store`` is one object with a part per concern: records and
their state changes, sessions, capacity (slots, pools, ports), coordination between processes,
and what monitoring reads.
"""

from __future__ import annotations

import redis

from ..settings import Settings
from . import scripts
from .base import now
from .capacity import Capacity
from .coordination import Coordination
from .observed import Observed
from .records import Records
from .sessions import Sessions

__all__ = ["Store", "now"]


class Store(Records, Sessions, Capacity, Coordination, Observed):
    """Typed access to the fleet's Redis keys. Thread-safe: it only holds a connection pool."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.scripts = scripts.register(client)

    @classmethod
    def connect(cls, settings: Settings, max_connections: int = 256) -> Store:
        client = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, max_connections=max_connections,
            health_check_interval=30)
        return cls(client, settings)

    def ping(self) -> bool:
        return bool(self.redis.ping())
