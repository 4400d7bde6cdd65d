"""Waiting for something to become true, with a deadline: one helper for every readiness check
(an agent's /healthz, the API's /health, a Redis socket), instead of a loop in each place."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, *, first: float = 0.005, most: float = 0.1) -> T | None:
    """Call ``check`` until it returns something truthy, which is returned, or until ``timeout``
    seconds passed (None). The pause between calls grows from ``first`` to ``most``. ``check``
    may raise to stop early (a process it waits for died)."""
    deadline = time.monotonic() + timeout
    delay = first
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, most)


def http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0,
            body: bytes | None = None) -> bool:
    """Whether GET ``url`` answers 200 (and exactly ``body``, if given); a connection that fails is
    False, not an error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=timeout) as response:
            return response.status == 200 and (body is None or response.read() == body)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
