"""What /metrics, the dashboard and the admin CLI read: counters, recent failures, queues."""

from __future__ import annotations

import json

from . import keys
from .base import StoreBase


class Observed(StoreBase):
    def add_metrics(self, increments: dict[str, float], failures: list[dict], keep: int) -> None:
        """Add a worker's buffered counts (fields of sandbox_core.metrics) and recent failures."""
        pipe = self.redis.pipeline(transaction=False)
        for field_name, amount in increments.items():
            pipe.hincrbyfloat(keys.METRICS, field_name, amount)
        if failures:
            pipe.lpush(keys.FAILURES, *(json.dumps(f) for f in failures))
            pipe.ltrim(keys.FAILURES, 0, keep - 1)
        pipe.execute()

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.redis.hgetall(keys.METRICS).items()}

    def recent_failures(self, limit: int) -> list[dict]:
        return [json.loads(f) for f in self.redis.lrange(keys.FAILURES, 0, limit - 1)]

    def waiting_jobs(self) -> int:
        """Callers blocked on a job's reply right now, in every API process."""
        return sum(1 for _ in self.redis.scan_iter(keys.waiting("*"), count=1000))

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
