"""A tiny init for when the agent is PID 1 in its container (no ``docker run --init``).

PID 1 must reap orphans (a shell command's background jobs end up as its children) and gets no
default signal actions. :func:`become_init` forks: the parent stays as init, reaping every child and
forwarding signals to the agent; the child returns and runs the agent. Upstream images use
supervisord for this.
"""

from __future__ import annotations

import contextlib
import os
import signal

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def become_init() -> None:
    """Return in the agent process; never return in the init process (it exits with the agent)."""
    if os.getpid() != 1:
        return
    pid = os.fork()
    if pid == 0:
        return
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(pid, signum))
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if reaped == pid:
            os._exit(os.waitstatus_to_exitcode(status) % 256)


def _forward(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
