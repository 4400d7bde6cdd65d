"""Where the fleet's CPU goes during a workload: ``python -m bench.sidebyside --only fleet --profile``.

Two views, both taken while the workload runs:

- CPU seconds per part (``/proc/<pid>/stat`` utime+stime before and after): the fleet's API,
  workers, beat and Redis (or upstream's one server process), what runs in the sandboxes, and the
  host's dockerd / containerd / shims. Processes that start and end inside the window (``runc``,
  shims of removed containers) are missed, and dockerd, containerd and "in the sandboxes" count
  every container of the host, so they are upper bounds when others run containers too;
- py-spy samples of each fleet process (``pip install -e '.[bench]'`` brings py-spy), summarised
  as the functions where most samples were taken (self) and the fleet's own frames on the stack
  (inclusive). py-spy pauses the process for each sample (100 Hz). On this project's hosts its
  idle detection does not work (threads parked on a queue are sampled too), so these shares are
  of wall time per thread, not CPU: the CPU seconds above are the figure to go by.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# The processes of a sandbox, ours (the agent) and upstream's (supervisord, nginx, uvicorn)
IN_SANDBOX = ("sandbox_agent", "uvicorn app:app", "nginx: ", "supervisord")


def classify(cmdline: str, comm: str, fleet_pids: set[int], pid: int) -> str | None:
    """The part of the system a process belongs to, or None to leave it out."""
    if comm in {"dockerd", "containerd", "runc"} or comm.startswith("containerd-shim"):
        return "containerd-shim" if comm.startswith("containerd-shim") else comm
    if pid in fleet_pids:
        # (every worker's command line holds "--without-heartbeat", so beat is matched by its verb)
        for marker, part in (("gunicorn", "api (gunicorn)"), (".calls", "calls worker"),
                             ("sandbox_workers beat", "beat"), ("worker", "lifecycle worker"),
                             ("redis-server", "redis"), ("sandbox_cli.server", "server (supervisor)"),
                             ("runtime-sandbox-server", "upstream server")):
            if marker in cmdline:
                return part
        return "server (other)"
    if any(m in cmdline for m in IN_SANDBOX):
        return "in the sandboxes"
    return None


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children[parent].append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_snapshot(fleet_root: int) -> dict[int, tuple[str, float]]:
    """pid -> (part, CPU seconds so far) for every process of interest."""
    fleet = descendants(fleet_root)
    snapshot = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        part = classify(cmdline, comm, fleet, pid)
        if part:
            fields = stat.rsplit(")", 1)[1].split()
            snapshot[pid] = (part, (int(fields[11]) + int(fields[12])) / TICK)
    return snapshot


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per part between two snapshots (processes new since ``before`` count whole)."""
    parts: dict[str, float] = collections.defaultdict(float)
    for pid, (part, seconds) in after.items():
        parts[part] += seconds - (before[pid][1] if pid in before and before[pid][0] == part else 0)
    return {part: round(seconds, 2) for part, seconds in sorted(parts.items(), key=lambda kv: -kv[1])}


def start_pyspy(pids: dict[str, int], folder: Path,
                duration: float) -> list[tuple[str, Path, subprocess.Popen]]:
    """py-spy record (raw collapsed stacks) of each named process and its children."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    folder.mkdir(parents=True, exist_ok=True)
    running = []
    for name, pid in pids.items():
        out = folder / f"{name.replace(' ', '_')}.txt"
        proc = subprocess.Popen([spy, "record", "--format", "raw", "--subprocesses",
                                 "--rate", "100", "--duration", str(int(duration) + 1),
                                 "--output", str(out), "--pid", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running.append((name, out, proc))
    return running


def summarise(path: Path, top: int = 12) -> dict:
    """The most-sampled leaf functions and the fleet's own frames (inclusive) of a raw profile."""
    leaf: collections.Counter = collections.Counter()
    ours: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf[frames[-1]] += n
        for frame in set(frames):
            if any(p in frame for p in ("sandbox_api/", "sandbox_workers/", "sandbox_core/", "backends/")):
                ours[frame] += n
    return {"samples": total,
            "top_self": [(f, round(100 * n / total, 1)) for f, n in leaf.most_common(top)] if total else [],
            "top_fleet_inclusive": [(f, round(100 * n / total, 1)) for f, n in ours.most_common(top)]
            if total else []}
