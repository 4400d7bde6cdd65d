"""Processes that never outlive the process that started them (Linux's PR_SET_PDEATHSIG).

``python -m sandbox_cli.orphans PID COMMAND...`` asks the kernel to SIGKILL this process when its
parent dies, checks that the parent is still ``PID``, then execs COMMAND (the setting survives the
exec). runtime-sandbox-server starts every part this way instead of in a ``preexec_fn``, which is
not safe in a process with threads; gunicorn's workers call :func:`die_with_parent` after their fork.
This module imports nothing heavy: it runs before every part of the fleet.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies, even one killed with
    SIGKILL. ``parent`` is the pid that must still be the parent: if it died before the call, the
    signal would never come, so this process exits now. The signal comes when the parent *thread*
    that forked exits: the parent starts its children from its main thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


def wrap(argv: list[str]) -> list[str]:
    """``argv`` run as a child of this process that dies with it."""
    return [sys.executable, "-m", "sandbox_cli.orphans", str(os.getpid()), *argv]


def main(args: list[str]) -> None:
    if len(args) < 2 or not args[0].isdigit():
        sys.exit("usage: python -m sandbox_cli.orphans PARENT_PID COMMAND [ARGS...]")
    die_with_parent(int(args[0]))
    os.execvp(args[1], args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
