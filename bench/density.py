"""How many idle base sandboxes one host holds with the fleet responsive, and how fast it creates
them: ``python -m bench.density``.

It starts a fleet (no pool, idle sandboxes never released) and adds sandboxes with ``/create``
from ``--clients`` threads, in steps (``--steps``, 100,200,300). At each step, once every
sandbox answers:

- creates/s over the step (what the host's lifecycle worker starts, FLEET_CREATES_IN_FLIGHT at
  a time), and each create's time;
- memory per sandbox: the host's MemAvailable before and after, divided by the sandboxes
  (containers, their shims and docker-proxies, dockerd's own), and the containers' own usage
  (``docker stats`` of ``--sample`` of them, minus page cache);
- the engine's processes per sandbox: RSS of the containerd shims and docker-proxies;
- whether the fleet is still responsive: 50 ``echo hi`` calls into one sandbox (p50, p99),
  ``/fleet/status``, and the fleet's CPU while idle for ``--idle`` seconds (beat, reconcile
  every FLEET_RECONCILE_INTERVAL=10 s, heartbeats: what N sandboxes cost when nothing happens).

It stops before MemAvailable would fall under ``--min-free-gib``, and at the end releases every
sandbox, waits for the teardowns, stops the fleet and removes whatever its prefix still names
(and any workspace mount it left), also after a failure. Results: bench/results/density-*.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import docker

from tests.localfleet import LocalFleet

from . import profile, workloads
from .fleet_bench import percentiles

MIB = 2**20
#: The engine's processes whose memory grows with the sandboxes.
ENGINE = ("containerd-shim", "docker-proxy", "dockerd", "containerd")


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def rss_of(comm: str) -> tuple[int, int]:
    """(processes, bytes of RSS) of every process named ``comm`` (Linux cuts names at 15
    characters: containerd-shim-runc-v2 is ``containerd-shim``)."""
    count = total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    count += 1
        except OSError:
            continue
    return count, total


def container_usage(fleet: LocalFleet, docker_client, sample: int) -> float | None:
    """Mean MiB of ``sample`` of the fleet's containers (usage minus page cache)."""
    usages = []
    for container in fleet.containers(docker_client)[:sample]:
        stats = container.stats(stream=False)["memory_stats"]
        cache = stats.get("stats", {}).get("cache", stats.get("stats", {}).get("inactive_file", 0))
        usages.append((stats["usage"] - cache) / MIB)
    return round(statistics.fmean(usages), 2) if usages else None


def responsiveness(fleet: LocalFleet, client: workloads.Client, name: str) -> dict:
    calls = []
    for _ in range(50):
        started = time.perf_counter()
        client.echo(name)
        calls.append(time.perf_counter() - started)
    started = time.perf_counter()
    fleet.get("fleet/status").raise_for_status()
    return {"call": percentiles(calls),
            "status_ms": round(1000 * (time.perf_counter() - started), 2)}


def idle_cpu(fleet: LocalFleet, seconds: float) -> dict[str, float]:
    """CPU ms per second of each part while nothing is asked of the fleet."""
    before = profile.cpu_snapshot(fleet.proc.pid)
    time.sleep(seconds)
    delta = profile.cpu_delta(before, profile.cpu_snapshot(fleet.proc.pid))
    return {part: round(1000 * cpu / seconds, 1) for part, cpu in delta.items()}


def grow(client: workloads.Client, count: int, clients: int) -> tuple[list[str], list[float], list[str]]:
    names, took, errors = [], [], []

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            names.append(client.acquire(f"density{i}", cold=True))
            took.append(time.perf_counter() - started)
        except Exception as e:  # counted and reported
            errors.append(f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(count)))
    return names, took, errors


def clean_up(fleet: LocalFleet, client: workloads.Client, docker_client, names: list[str]) -> int:
    """Release, wait for the teardowns, stop, remove leftovers; returns how many were left.
    Each step runs whatever the one before it raised."""
    def ours() -> list[str]:  # the low-level listing: no inspect of containers going away
        return [c["Id"] for c in docker_client.api.containers(all=True,
                                                               filters={"name": fleet.prefix})]

    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: _quietly(client.release, n), names))
        deadline = time.monotonic() + 30 + len(names) / 2
        while ours() and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        fleet.stop(timeout=60)
        left = ours()
        for container in left:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)
        mounts = Path(fleet.values["DEFAULT_MOUNT_DIR"])
        for workspace in mounts.iterdir() if mounts.is_dir() else []:
            if os.path.ismount(workspace):
                subprocess.run(["umount", "-l", str(workspace)], capture_output=True, timeout=30)
    return len(left)


def _quietly(func, *args) -> None:
    with contextlib.suppress(Exception):  # a failed release: the removal by prefix takes it
        func(*args)


@click.command()
@click.option("--steps", default="100,200,300", show_default=True,
              help="sandbox counts to reach, in order")
@click.option("--clients", default=8, show_default=True, help="threads sending /create")
@click.option("--sample", default=20, show_default=True, help="containers whose usage is read")
@click.option("--idle", default=20.0, show_default=True, help="seconds of idle CPU measured a step")
@click.option("--min-free-gib", default=4.0, show_default=True,
              help="stop before MemAvailable would fall under this")
@click.option("--access-mode", type=click.Choice(["bridge", "port"]), default="bridge",
              show_default=True, help="DOCKER_ACCESS_MODE of the fleet (port: a docker-proxy each)")
def main(steps: str, clients: int, sample: int, idle: float, min_free_gib: float,
         access_mode: str) -> None:
    """Fill this host with idle base sandboxes in steps, measuring at each."""
    targets = [int(s) for s in steps.split(",")]
    docker_client = docker.from_env()
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "nproc": os.cpu_count(),
                     "access_mode": access_mode,
                     "mem_total_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                                            / 2**30, 1), "steps": []}
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"density-{time.strftime('%Y%m%d-%H%M%S')}.json"
    names: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sandbox-fleet-density-") as tmp:
        fleet = LocalFleet(Path(tmp), POOL_SIZE=0, FLEET_SANDBOX_IDLE_TIMEOUT=0,
                           FLEET_RECONCILE_INTERVAL=10, PORT_RANGE="[12000,17000]",
                           FLEET_WORKER_CONCURRENCY=max(8, clients), DOCKER_ACCESS_MODE=access_mode)
        client = workloads.Client(fleet.url, fleet.token)
        try:
            fleet.start(timeout=120)
            baseline = mem_available()
            engine_before = {comm: rss_of(comm) for comm in ENGINE}
            for target in targets:
                per_sandbox = (baseline - mem_available()) / max(1, len(names))
                if mem_available() - (target - len(names)) * max(per_sandbox, 16 * MIB) \
                        < min_free_gib * 2**30:
                    click.echo(f"stopping before {target}: MemAvailable would fall under "
                               f"{min_free_gib} GiB", err=True)
                    break
                click.echo(f"growing to {target} sandboxes...", err=True)
                started = time.perf_counter()
                added, took, errors = grow(client, target - len(names), clients)
                elapsed = time.perf_counter() - started
                names += added
                engine = {comm: [now - then for now, then in zip(rss_of(comm), engine_before[comm],
                                                                  strict=True)]
                          for comm in ENGINE}
                step = {"sandboxes": len(names), "failed": len(errors), "errors": errors[:3],
                        "creates_per_s": round(len(added) / elapsed, 2),
                        "create": percentiles(took) if took else None,
                        "load": os.getloadavg(),
                        "host_mib_per_sandbox": round((baseline - mem_available()) / MIB
                                                      / max(1, len(names)), 2),
                        "mem_available_gib": round(mem_available() / 2**30, 2),
                        "container_mib": container_usage(fleet, docker_client, sample),
                        # processes the engine added (other work on the host may add some too)
                        **{f"{comm}_added": count for comm, (count, _) in engine.items()},
                        **{f"{comm}_mib_per_sandbox": round(rss / MIB / max(1, len(names)), 2)
                           for comm, (_, rss) in engine.items()},
                        "responsive": responsiveness(fleet, client, names[0]) if names else None,
                        "idle_cpu_ms_per_s": idle_cpu(fleet, idle)}
                results["steps"].append(step)
                path.write_text(json.dumps(results, indent=2))
                click.echo(json.dumps(step), err=True)
                if errors:
                    break
        finally:
            results["left_after_stop"] = clean_up(fleet, client, docker_client, names)
            path.write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))
    click.echo(f"results: {path}", err=True)


if __name__ == "__main__":
    main()
