"""What every part of the store shares: the Redis client, the settings, the Lua steps."""

from __future__ import annotations

import time
from types import SimpleNamespace

import redis

from ..settings import Settings
from . import keys


def now() -> float:
    return time.time()


class StoreBase:
    redis: redis.Redis
    settings: Settings
    scripts: SimpleNamespace

    def pool_key(self, sandbox_type: str) -> str:
        return keys.pool(self.settings.REDIS_CONTAINER_POOL_KEY, sandbox_type)

    def ports_key(self, host: str) -> str:
        return keys.ports(self.settings.REDIS_PORT_KEY, host)
