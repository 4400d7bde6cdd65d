"""What starting one shell command costs the agent: ``python -m bench.spawn [--calls N]``.

Runs ``bash -c 'echo hi'`` through the agent's ``procs.spawn`` both ways it can raise the
command's OOM score, alternating, in one run on this host: through a ``/bin/sh`` that writes the
score and execs bash (``procs.OOM_VICTIM``), and through ``BASH_ENV`` (``oom_victim.sh``, what
``run_shell_command`` uses). Prints wall time per command and the CPU the children took
(user + system, from ``getrusage``), the figure that counts on a busy host.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images" / "agent"))
from sandbox_agent import procs  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _one(way: str) -> tuple[float, float]:
    argv, env = ["bash", "-c", "echo hi"], {"PATH": "/usr/bin:/bin"}
    if way == "sh":  # what every command paid before: /bin/sh, then bash
        argv, env = [*procs.OOM_VICTIM, *argv], {**env, "BASH_ENV": ""}
    cpu, start = _children_cpu(), time.perf_counter()
    proc = procs.spawn(argv, "/tmp", env, oom_victim=(way == "bash_env"),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=10)
    assert out == b"hi\n", out
    return time.perf_counter() - start, _children_cpu() - cpu


@click.command()
@click.option("--calls", default=400, show_default=True, help="commands per way")
def main(calls: int) -> None:
    ways = ("sh", "bash_env")
    walls: dict[str, list[float]] = {w: [] for w in ways}
    cpus: dict[str, float] = dict.fromkeys(ways, 0.0)
    for i in range(calls * 2):
        way = ways[i % 2]
        wall, cpu = _one(way)
        walls[way].append(wall)
        cpus[way] += cpu
    print("| way | wall p50 ms | CPU ms per command |\n|---|---|---|")
    for way in ways:
        print(f"| {way} | {statistics.median(walls[way]) * 1000:.2f} | {cpus[way] / calls * 1000:.2f} |")
    print(f"ratio bash_env / sh: CPU {cpus['bash_env'] / cpus['sh']:.2f}x, wall "
          f"{statistics.median(walls['bash_env']) / statistics.median(walls['sh']):.2f}x")


if __name__ == "__main__":
    main()
