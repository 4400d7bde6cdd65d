"""Sandbox records: their fields, their state changes, the hosts that hold them, their deadlines."""

from __future__ import annotations

import json
from collections.abc import Iterable

from .. import states
from . import keys
from .base import StoreBase, now

MAX_REDIRECTS = 10

_JSON_FIELDS = ("meta", "ports", "environment")
_FLOAT_FIELDS = ("last_active_at", "recycled_at", "released_at", "updated_at", "created_at",
                 "claimed_at")
_INT_FIELDS = ("port", "timeout")


class Records(StoreBase):
    def put(self, name: str, **fields: object) -> None:
        self.redis.hset(keys.record(name), mapping=_encode(fields))

    def update(self, name: str, **fields: object) -> None:
        fields.setdefault("updated_at", now())
        self.put(name, **fields)

    def get(self, name: str) -> dict | None:
        data = self.redis.hgetall(keys.record(name))
        return _decode(data) if data else None

    def get_many(self, names: Iterable[str]) -> dict[str, dict | None]:
        """Many records in one round trip (a host's reconcile reads them all)."""
        names = list(names)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.record(name))
        return {name: _decode(data) if data else None
                for name, data in zip(names, pipe.execute(), strict=True)}

    def field(self, name: str, field_name: str) -> str | None:
        """One field of a record as stored (a string), without reading the rest."""
        return self.redis.hget(keys.record(name), field_name)

    def find(self, identity: str, follow: bool = True,
             expect_reply: tuple[str, float] | None = None) -> dict | None:
        """A record by container name or bare session id, following ``redirect_to`` hops.

        With ``expect_reply`` (job id, patience), the caller's wait for that job's reply is
        registered (as ``expect_reply`` does) in the round trip of the first read: a tool call
        reads its sandbox's record and sends its job right after."""
        if expect_reply:
            job_id, patience = expect_reply
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(keys.record(identity))
            pipe.set(keys.waiting(job_id), "1", ex=max(1, int(patience)))
            data = pipe.execute()[0]
            record = _decode(data) if data else None
        else:
            record = self.get(identity)
        record = record or self.get(self.settings.CONTAINER_PREFIX_KEY + identity)
        hops = 0
        while follow and record and record.get("redirect_to") and hops < MAX_REDIRECTS:
            record = self.get(record["redirect_to"]) or record
            hops += 1
        return record

    def delete(self, name: str) -> None:
        self.redis.delete(keys.record(name))

    def expire_record(self, name: str) -> None:
        """Keep a record that is over for RELEASE_KET_TTL seconds more, as a released one."""
        self.redis.expire(keys.record(name), self.settings.RELEASE_KET_TTL)

    def open_record(self, name: str, **fields: object) -> None:
        """Write the record of a sandbox about to be created (state ``creating``), and have the
        reaper look at it soon: every record gets a deadline (see sandbox_core.reaper)."""
        stamp = now()
        self.put(name, container_name=name, state=states.CREATING, created_at=stamp,
                 updated_at=stamp, **fields)
        self.reschedule(name, stamp)

    def scan_records(self) -> Iterable[dict]:
        for key in self.redis.scan_iter(keys.record("*"), count=500):
            data = self.redis.hgetall(key)
            if data:
                yield _decode(data)

    def live_summaries(self, names: Iterable[str], wanted: tuple[str, ...]) -> list[dict]:
        """Some fields of many records in one round trip (records gone meanwhile are skipped)."""
        names = list(names)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(keys.record(name), wanted)
        out = []
        for name, values in zip(names, pipe.execute(), strict=True):
            if any(v is not None for v in values):
                out.append(_decode({"container_name": name, **{
                    k: v for k, v in zip(wanted, values, strict=True) if v is not None}}))
        return out

    # -- state changes -----------------------------------------------------------------------

    def retire(self, record: dict, state: str = states.RELEASED, reason: str = "") -> str | None:
        """Move a live record to released/recycled exactly once; returns its previous state."""
        return self.scripts.retire(
            keys=[keys.record(record["container_name"]), keys.LIVE,
                  self.pool_key(record.get("pool_type") or record["sandbox_type"])],
            args=[state, now(), self.settings.RELEASE_KET_TTL, reason, keys.NS])

    def finish_create(self, name: str, state: str) -> bool:
        """creating -> warm/running; False if the sandbox was released while it started."""
        return bool(self.scripts.finish(keys=[keys.record(name)], args=[state, now()]))

    def own_create(self, name: str, host: str, node: str) -> int:
        """Make worker ``node`` on ``host`` the owner of a create: 1 if it now is, 0 if the record
        is no longer creating, -1 if another live worker process runs it."""
        return int(self.scripts.own_create(keys=[keys.record(name)],
                                           args=[host, node, keys.WORKER_PREFIX]))

    def hand_out(self, name: str) -> None:
        """A sandbox created for one client (warm until a session takes it, as upstream) is now
        that client's: ``running``. A record that is no longer warm is left as it is."""
        key = keys.record(name)
        with self.redis.pipeline() as pipe:
            pipe.watch(key)
            state = pipe.hget(key, "state")
            pipe.multi()
            if state == states.WARM:
                pipe.hset(key, "state", states.RUNNING)
            pipe.execute()

    def touch_sandbox(self, name: str) -> None:
        """A call reached a sandbox with no session: it is not idle (FLEET_SANDBOX_IDLE_TIMEOUT)."""
        self.redis.hset(keys.record(name), "last_active_at", now())

    # -- hosts -------------------------------------------------------------------------------

    def host_names(self, host: str) -> set[str]:
        return self.redis.smembers(keys.host(host))

    def add_to_host(self, host: str, name: str) -> None:
        self.redis.sadd(keys.host(host), name)

    def remove_from_host(self, host: str, name: str) -> None:
        self.redis.srem(keys.host(host), name)

    # -- lifetimes and deadlines (read by sandbox_core.reaper) -------------------------------

    def due_deadlines(self, limit: int) -> list[str]:
        """Names whose deadline has come, oldest first, at most ``limit`` (one reaper tick)."""
        return self.redis.zrangebyscore(keys.DEADLINES, "-inf", now(), start=0, num=limit)

    def deadline_of(self, name: str) -> float | None:
        return self.redis.zscore(keys.DEADLINES, name)

    def reschedule(self, name: str, at: float) -> None:
        """The reaper looks at this record again at ``at`` (never later than it may expire)."""
        self.redis.zadd(keys.DEADLINES, {name: at})

    def forget_deadline(self, name: str) -> None:
        self.redis.zrem(keys.DEADLINES, name)


def _encode(fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            value = json.dumps(value)
        elif value is None:
            value = ""
        elif isinstance(value, bool):
            value = int(value)
        out[key] = value
    return out


def _decode(data: dict) -> dict:
    record: dict = dict(data)
    for key in _JSON_FIELDS:
        if record.get(key):
            record[key] = json.loads(record[key])
        else:
            record[key] = None
    for key in _FLOAT_FIELDS:
        record[key] = float(record[key]) if record.get(key) else None
    for key in _INT_FIELDS:
        record[key] = int(record[key]) if record.get(key) else None
    for key, value in list(record.items()):
        if value == "":
            record[key] = None
    return record
