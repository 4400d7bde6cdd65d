"""Which jobs this worker process is running, told to Redis every BEAT seconds.

An API process that has waited a few seconds for a reply asks which worker runs its job; if that
worker stops beating (killed, OOM, host lost), the caller gets a clear error in seconds instead of
at its timeout. Jobs shorter than a beat are never written anywhere: the fast path pays nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from sandbox_core.store import Store

log = logging.getLogger(__name__)

BEAT = 2.0
TTL = 3 * int(BEAT)
#: This process's identity in the fleet (``lifecycle@host:pid``), set when the worker starts.
NODE = "unknown"

_running: dict[str, float] = {}
_lock = threading.Lock()


def started(job_id: str) -> None:
    with _lock:
        _running[job_id] = time.monotonic()


def finished(job_id: str) -> None:
    with _lock:
        _running.pop(job_id, None)


def running_longer_than(seconds: float) -> list[str]:
    cutoff = time.monotonic() - seconds
    with _lock:
        return [job for job, since in _running.items() if since <= cutoff]


class Heartbeat:
    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.store.worker_beat(self.node, running_longer_than(BEAT / 2), TTL)
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("worker %s: heartbeat failed", self.node, exc_info=True)
            if self.stopping.wait(BEAT):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(BEAT * 2)
        try:
            self.store.worker_gone(self.node)
        except Exception:
            log.warning("worker %s: could not sign off", self.node, exc_info=True)
