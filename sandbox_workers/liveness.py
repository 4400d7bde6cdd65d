"""Which jobs this worker process holds, told to Redis by a heartbeat thread.

An API process that has waited a few seconds for a reply asks which worker holds its job; if that
worker stops beating (killed, OOM, host lost), the caller learns it within seconds instead of at
its timeout, and a create is handed to another worker. A job counts from the moment the worker
receives it (a prefetched job waiting for a thread is held too), until it ends or is revoked.

A tool call is reported by the heartbeat thread a few milliseconds later (woken by
:func:`started`, coalescing bursts), never on the call's own path, so it pays nothing for it; one
that ended by then is not written at all (its caller never asked who ran it). A
create is reported before it runs (``urgent``): one whose worker died in those milliseconds would
otherwise never be seen running, and its caller would wait for its whole timeout.
"""

from __future__ import annotations

import logging
import threading
import time

from sandbox_core.store import Store

log = logging.getLogger(__name__)

BEAT = 1.0
#: A worker silent this long is dead: three beats missed.
TTL = 3
#: After a job starts, the thread waits this long for others to start too, then writes them all.
COALESCE = 0.02
#: This process's identity in the fleet (``lifecycle@host:pid``), set when the worker starts.
NODE = "unknown"

#: job id -> how many copies of it this process holds (a create handed on under its own id may
#: come back to this worker before the copy that handed it on has ended)
_held: dict[str, int] = {}
_lock = threading.Lock()
_news = threading.Event()
#: The running heartbeat, for urgent reports.
_heartbeat: Heartbeat | None = None


def started(job_id: str, urgent: bool = False) -> None:
    """This process holds the job now (received it; it may still wait for a thread)."""
    with _lock:
        _held[job_id] = _held.get(job_id, 0) + 1
    if urgent and _heartbeat is not None:
        _heartbeat.beat_now()
    else:
        _news.set()


def finished(job_id: str) -> None:
    """The job ended or was revoked here."""
    with _lock:
        left = _held.get(job_id, 0) - 1
        if left > 0:
            _held[job_id] = left
        else:
            _held.pop(job_id, None)


def running() -> list[str]:
    with _lock:
        return list(_held)


class Heartbeat:
    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._written: set[str] | None = None  # the jobs the last beat wrote

    def start(self) -> None:
        global _heartbeat
        self._beat()  # alive before the first job can arrive
        _heartbeat = self
        self.thread.start()

    def beat_now(self) -> None:
        """Write the jobs held now, from the caller's thread (the beats are idempotent)."""
        self._beat()

    def _run(self) -> None:
        next_beat = time.monotonic() + BEAT
        while not self.stopping.is_set():
            news = _news.wait(max(0.0, next_beat - time.monotonic()))
            if news:
                time.sleep(COALESCE)
            _news.clear()
            due = time.monotonic() >= next_beat
            if self._beat(only_if_changed=not due):
                next_beat = time.monotonic() + BEAT

    def _beat(self, only_if_changed: bool = False) -> bool:
        """Write the jobs held now; with ``only_if_changed``, not if they are what was written
        last (a call that ended within COALESCE: its caller never asked). True if written."""
        held = running()
        if only_if_changed and set(held) == self._written:
            return False
        try:
            self.store.worker_beat(self.node, held, TTL)
        except Exception:  # Redis away for a moment: the next beat tries again
            log.warning("worker %s: heartbeat failed", self.node, exc_info=True)
            return False
        self._written = set(held)
        return True

    def stop(self) -> None:
        self.stopping.set()
        _news.set()
        self.thread.join(BEAT * 2)
        try:
            self.store.worker_gone(self.node)
        except Exception:
            log.warning("worker %s: could not sign off", self.node, exc_info=True)
