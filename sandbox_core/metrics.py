"""The workers' series: counted in each worker process, summed fleet-wide in Redis.

Workers may run on many hosts, and only Redis is shared by all of them, so their counters and
histograms live there (the store's ``metrics`` hash) and every API process's ``/metrics`` shows
the whole fleet's. A job's path pays nothing for it: :func:`job_done` adds to an in-process
buffer, and a thread writes the buffer in one pipeline every :data:`FLUSH_EVERY` seconds (so a
killed worker loses at most that much of its counts; a Redis that restarts empty resets them,
which Prometheus' ``rate()`` takes as a counter reset).

A field of the hash is ``json([series, [[label, value], ...]])``; a histogram is kept as its
``_bucket`` (one per upper bound, not cumulative: the reader adds them up), ``_sum`` and ``_count``.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import threading
import time
from typing import Any

from . import jobs
from .errors import SandboxError

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0
#: Upper bounds (s) of the latency histograms: a tool call takes ms, a create up to a minute.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           float("inf"))
#: Failures kept for the dashboard.
KEEP_FAILURES = 50

#: name -> (type, help, label names). Every series the workers write (docs/operations.md lists them).
SERIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sandbox_fleet_creates": ("counter", "sandbox creates finished by workers, by result",
                              ("host", "sandbox_type", "result")),
    "sandbox_fleet_create_seconds": ("histogram", "time a worker took to create a sandbox until "
                                     "its agent answered", ("host", "sandbox_type")),
    "sandbox_fleet_releases": ("counter", "sandbox teardowns finished by workers, by result",
                               ("host", "sandbox_type", "result")),
    "sandbox_fleet_release_seconds": ("histogram", "time a worker took to tear a sandbox down",
                                      ("host", "sandbox_type")),
    "sandbox_fleet_calls": ("counter", "requests carried into sandboxes (tool calls, file "
                            "proxy, ...), by operation and result", ("host", "op", "result")),
    "sandbox_fleet_call_seconds": ("histogram", "time a worker took to carry one request into "
                                   "a sandbox and read its answer", ("host", "op")),
    "sandbox_fleet_reaped": ("counter", "sandboxes the reaper recycled or released (idle "
                             "sessions, idle timeout, max lifetime, dead creates)", ()),
}

_SKIPPED_OPS = {"warm"}  # the worker's own warm-up call after a create, not a client's


def result_of(outcome: Any) -> str:
    """ok; rejected (the client's mistake or a missing sandbox: 4xx); failed (anything else)."""
    if isinstance(outcome, SandboxError):
        return "rejected" if outcome.status < 500 else "failed"
    if isinstance(outcome, BaseException):
        return "failed"
    return "ok"


def field(series: str, labels: dict[str, str]) -> str:
    return json.dumps([series, sorted(labels.items())])


def parse_field(text: str) -> tuple[str, dict[str, str]]:
    series, labels = json.loads(text)
    return series, dict(labels)


class Recorder:
    """One per worker process: buffers counts and flushes them to the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}
        self._failures: list[dict] = []
        self._thread: threading.Thread | None = None
        self._store = None

    def start(self, store) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._store = store
            self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
            self._thread.start()
        atexit.register(self.flush)  # a worker stopping cleanly writes its last second too

    def inc(self, series: str, labels: dict[str, str], amount: float = 1.0) -> None:
        key = field(series + "_total", labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount

    def observe(self, series: str, labels: dict[str, str], seconds: float) -> None:
        bound = BUCKETS[bisect.bisect_left(BUCKETS, seconds)]
        keys = (field(series + "_bucket", {**labels, "le": bound_label(bound)}),
                field(series + "_count", labels))
        with self._lock:
            for key in keys:
                self._counts[key] = self._counts.get(key, 0.0) + 1
            total = field(series + "_sum", labels)
            self._counts[total] = self._counts.get(total, 0.0) + seconds

    def failure(self, **entry: Any) -> None:
        with self._lock:
            self._failures.append({"at": time.time(), **entry})
            del self._failures[:-KEEP_FAILURES]

    def flush(self) -> None:
        with self._lock:
            counts, failures = self._counts, self._failures
            self._counts, self._failures = {}, []
        if not (counts or failures) or self._store is None:
            return
        try:
            self._store.add_metrics(counts, failures[::-1], KEEP_FAILURES)
        except Exception:  # Redis away for a moment: keep the counts for the next flush
            log.warning("could not write the worker's metrics; will retry", exc_info=True)
            with self._lock:
                for key, amount in counts.items():
                    self._counts[key] = self._counts.get(key, 0.0) + amount
                self._failures[:0] = failures

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            self.flush()


def bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


RECORDER = Recorder()


def job_done(ctx, task: str, kwargs: dict, seconds: float, outcome: Any) -> None:
    """Count one finished job of this worker (``outcome``: its return value or its exception)."""
    try:
        _count(ctx, task, kwargs, seconds, outcome)
    except Exception:  # metrics never fail a job
        log.warning("could not count job %s", task, exc_info=True)


def _count(ctx, task: str, kwargs: dict, seconds: float, outcome: Any) -> None:
    RECORDER.start(ctx.store)
    host, name, result = ctx.host, kwargs.get("name", ""), result_of(outcome)
    if task in (jobs.CREATE, jobs.TEARDOWN):
        kind = "create" if task == jobs.CREATE else "release"
        sandbox_type = ctx.store.field(name, "sandbox_type") or "unknown"
        labels = {"host": host, "sandbox_type": sandbox_type}
        RECORDER.inc(f"sandbox_fleet_{kind}s", {**labels, "result": result})
        if result == "ok":
            RECORDER.observe(f"sandbox_fleet_{kind}_seconds", labels, seconds)
        else:
            RECORDER.failure(host=host, name=name, what=kind, sandbox_type=sandbox_type,
                             detail=_detail(outcome))
    elif task == jobs.AGENT and kwargs.get("op") not in _SKIPPED_OPS:
        op = str(kwargs.get("op"))
        RECORDER.inc("sandbox_fleet_calls", {"host": host, "op": op, "result": result})
        RECORDER.observe("sandbox_fleet_call_seconds", {"host": host, "op": op}, seconds)
        if result == "failed":
            RECORDER.failure(host=host, name=name, what=f"call {op}", detail=_detail(outcome))
    elif task == jobs.REAP and isinstance(outcome, int) and outcome > 0:
        RECORDER.inc("sandbox_fleet_reaped", {}, outcome)


def _detail(outcome: Any) -> str:
    text = outcome.detail if isinstance(outcome, SandboxError) else f"{type(outcome).__name__}: {outcome}"
    return text[:300]
