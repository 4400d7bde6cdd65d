"""Child processes: start them in their own process group, kill the whole group, read with a deadline."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import IO


def spawn(argv: Sequence[str], cwd: str, env: Mapping[str, str], **kwargs) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session (so its whole group can be killed)."""
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), start_new_session=True, **kwargs)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group that ``proc`` leads (it and everything it started that stayed in it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def read_until(
    streams: list[IO[bytes]], deadline: float, limit: int
) -> tuple[dict[IO[bytes], bytes], bool, int]:
    """Read ``streams`` until all reach EOF or ``deadline`` (a ``time.monotonic()`` value) passes.

    Keeps at most ``limit`` bytes per stream and counts the rest. Returns the data per stream, whether
    every stream reached EOF, and how many bytes were dropped.
    """
    data: dict[IO[bytes], bytearray] = {s: bytearray() for s in streams}
    dropped = 0
    with selectors.DefaultSelector() as sel:
        for stream in streams:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = data[key.fileobj]
                room = limit - len(buf)
                if room > 0:
                    buf += chunk[:room]
                dropped += max(0, len(chunk) - max(room, 0))
        done = not sel.get_map()
    return {s: bytes(b) for s, b in data.items()}, done, dropped


def wait(proc: subprocess.Popen, timeout: float | None) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def seconds(value: float) -> str:
    """``60`` for 60.0, ``0.5`` for 0.5: how a timeout is written in messages."""
    return str(int(value)) if float(value).is_integer() else str(value)
