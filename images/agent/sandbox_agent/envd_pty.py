"""Pseudo-terminals for E2B's pty processes: open one at a size, start a program on it, resize it.

The program becomes a session leader with the pty as its controlling terminal (``setsid -c``,
util-linux, in every image), so an interactive shell has job control, ^C reaches its foreground
group and a resize sends it SIGWINCH. Imported on a sandbox's first pty only.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios

from . import procs
from .errors import bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

MAX_SIDE = 10000


def size_of(pty: Any) -> tuple[int, int]:
    """``(rows, cols)`` of envd's ``PTY`` message (``{size: {rows, cols}}``), checked."""
    size = (pty or {}).get("size") if isinstance(pty, dict) else None
    if not isinstance(size, dict):
        raise bad_request("pty.size is required")
    rows, cols = size.get("rows"), size.get("cols")
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            raise bad_request(f"pty.size.{name} must be an integer from 1 to {MAX_SIDE}")
    return rows, cols


def resize(fd: int, rows: int, cols: int) -> None:
    """Set the terminal's size; the kernel signals SIGWINCH to its foreground group."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn(argv: Sequence[str], cwd: str, env: Mapping[str, str], rows: int,
          cols: int) -> tuple[subprocess.Popen, int]:
    """Start ``argv`` on a new pty of ``rows`` x ``cols``; returns it and the pty's master fd
    (the agent's end: read for output, write for input). The child is not a group leader when
    ``setsid`` runs, so it calls setsid() itself and keeps its pid."""
    master, slave = os.openpty()  # both close-on-exec: no other child inherits them
    try:
        resize(master, rows, cols)
        popen = subprocess.Popen(["setsid", "-c", *procs.OOM_VICTIM, *argv], cwd=cwd,
                                 env=dict(env), stdin=slave, stdout=slave, stderr=slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return popen, master
