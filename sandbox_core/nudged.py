"""Work a request asks for but need not wait for, run soon in a thread of its own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Nudged:
    """Runs ``action`` in a daemon thread soon after each :meth:`nudge`; nudges that arrive while
    it runs coalesce into one more run, so a burst of requests costs a run or two, not one each.
    The thread starts at the first nudge (never at import, and after a fork, in the child)."""

    def __init__(self, action: Callable[[], object], name: str) -> None:
        self.action = action
        self.name = name
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def nudge(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.action()
            except Exception:  # Redis away for a moment: beat's periodic run catches up
                log.warning("%s failed", self.name, exc_info=True)
