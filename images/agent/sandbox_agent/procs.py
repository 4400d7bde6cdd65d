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


#: Raise the new process's OOM score to the most, then become ``argv`` (exec keeps the pid).
#: Raising needs no capability; the agent cannot lower its own, so this is how it stays alive.
OOM_VICTIM = ["/bin/sh", "-c", '{ echo 1000 >/proc/self/oom_score_adj; } 2>/dev/null; exec "$@"', "sh"]
#: The same for ``bash`` itself, read through BASH_ENV: one exec per command instead of two
#: (``python -m bench.spawn``: 0.67x the CPU per command; docs/benchmarks.md).
_BASH_OOM_VICTIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oom_victim.sh")
#: The sandbox's memory cgroup as it sees it: v2, then v1.
_CGROUP_V2, _CGROUP_V1 = "/sys/fs/cgroup", "/sys/fs/cgroup/memory"


def spawn(argv: Sequence[str], cwd: str, env: Mapping[str, str], oom_victim: bool = False,
          **kwargs) -> subprocess.Popen:
    """Start ``argv`` as the leader of a new session (so its whole group can be killed).

    With ``oom_victim``, it and everything it starts are what the kernel kills first when the
    sandbox runs out of memory, so the agent itself lives on to say so."""
    argv, env = list(argv), dict(env)
    if oom_victim and argv[0] == "bash" and "BASH_ENV" not in env:
        env["BASH_ENV"] = _BASH_OOM_VICTIM
    elif oom_victim:
        argv = [*OOM_VICTIM, *argv]
    return subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, **kwargs)


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


def oom_kills() -> int | None:
    """How many processes the kernel killed in this sandbox for its memory limit (None: unknown,
    e.g. under gVisor, which has no memory cgroup inside)."""
    for path, key in ((f"{_CGROUP_V2}/memory.events", "oom_kill"),
                      (f"{_CGROUP_V1}/memory.oom_control", "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def memory_limit() -> int | None:
    """The sandbox's memory limit in bytes, or None when there is none or it cannot be read."""
    for path in (f"{_CGROUP_V2}/memory.max", f"{_CGROUP_V1}/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = int(f.read().strip())
        except (OSError, ValueError):
            continue
        return value if value < 1 << 50 else None  # v1 writes a huge number for "no limit"
    return None


def oom_message(subject: str) -> str:
    """``<subject> killed for exceeding the sandbox's memory limit (1024 MiB)``."""
    limit = memory_limit()
    return (f"{subject} killed for exceeding the sandbox's memory limit"
            + (f" ({limit >> 20} MiB)" if limit else ""))
