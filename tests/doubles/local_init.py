"""PID 1 of a local-process sandbox (tests only): what a container's init is to its processes.

``python local_init.py <parent pid> <delay s>``, started by LocalProcessBackendForTests with the
agent's environment. It dies with the worker that started it (PR_SET_PDEATHSIG), becomes the
subreaper of everything the agent starts (a shell command's background jobs included), starts
``python -m sandbox_agent`` after ``delay`` seconds (an image whose agent starts late), forwards
SIGTERM/SIGINT/SIGHUP to it, and when the agent has ended kills whatever is left, so nothing a
sandbox started outlives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")


def die_with(parent: int) -> None:
    """SIGTERM when ``parent`` ends; exit now if it already has (before prctl took effect)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def run_agent(delay: float) -> None:
    die_with(os.getppid())
    if delay:
        time.sleep(delay)  # the image's own start-up time, as `sleep 8; exec agent` in Docker
    os.execv(sys.executable, [sys.executable, "-m", "sandbox_agent"])


def children() -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_leftovers() -> None:
    """Kill and reap every process left (they were reparented to us); their children come to us
    in turn, so repeat until none is left."""
    for _ in range(100):
        left = children()
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            for _ in left:
                os.wait()


def main() -> int:
    parent, delay = int(sys.argv[1]), float(sys.argv[2])
    die_with(parent)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    agent = os.fork()
    if agent == 0:
        run_agent(delay)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    code = 1
    while True:
        pid, status = os.wait()  # reaps orphans too, as an init does
        if pid == agent:
            code = os.waitstatus_to_exitcode(status)
            break
    kill_leftovers()
    return code % 256


if __name__ == "__main__":
    sys.exit(main())
