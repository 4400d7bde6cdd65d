"""Which jobs this worker process is running, told to Redis by a heartbeat thread.

An API process that has waited a few seconds for a reply asks which worker runs its job; if that
worker stops beating (killed, OOM, host lost), the caller learns it within seconds instead of at
its timeout, and a create is handed to another worker. A job is reported by the heartbeat thread a
few milliseconds after it starts (woken by :func:`started`, coalescing bursts), never on the job's
own path, so a tool call pays nothing for it.
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

_running: dict[str, float] = {}
_lock = threading.Lock()
_news = threading.Event()


def started(job_id: str) -> None:
    with _lock:
        _running[job_id] = time.monotonic()
    _news.set()


def finished(job_id: str) -> None:
    with _lock:
        _running.pop(job_id, None)


def running() -> list[str]:
    with _lock:
        return list(_running)


class Heartbeat:
    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()  # alive before the first job can arrive
        self.thread.start()

    def _run(self) -> None:
        next_beat = time.monotonic() + BEAT
        while not self.stopping.is_set():
            if _news.wait(max(0.0, next_beat - time.monotonic())):
                time.sleep(COALESCE)
            _news.clear()
            self._beat()
            next_beat = time.monotonic() + BEAT

    def _beat(self) -> None:
        try:
            self.store.worker_beat(self.node, running(), TTL)
        except Exception:  # Redis away for a moment: the next beat tries again
            log.warning("worker %s: heartbeat failed", self.node, exc_info=True)

    def stop(self) -> None:
        self.stopping.set()
        _news.set()
        self.thread.join(BEAT * 2)
        try:
            self.store.worker_gone(self.node)
        except Exception:
            log.warning("worker %s: could not sign off", self.node, exc_info=True)
