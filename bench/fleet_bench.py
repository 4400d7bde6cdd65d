"""Latency and memory of a whole fleet on this machine: ``python -m bench`` (or ``bench/run``).

It starts its own fleet with runtime-sandbox-server (real Redis, real Docker, the base image) and
measures, over real HTTP with persistent client connections as the SDK uses:

- pool-hit acquire to first result: ``/create_from_pool`` then ``echo hi`` through ``/call_tool``;
- ``/call_tool`` through the fleet against the same call straight to the sandbox's agent port
  (the difference is the fleet's overhead: API, Celery, Redis, worker);
- cold create to first result: ``/create`` then ``echo hi``, with no pool;
- ``/release`` answer time;
- memory of idle warm sandboxes (``docker stats``: usage minus page cache).

Figures are printed, and written as JSON to bench/results/.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import click
import docker
import requests

from backends.docker import bridge_url
from tests.localfleet import LocalFleet

ECHO = {"tool_name": "run_shell_command", "arguments": {"command": "echo hi"}}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"n": len(samples), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "mean_ms": round(statistics.fmean(samples) * 1000, 2)}


def timed(func, *args):
    start = time.perf_counter()
    result = func(*args)
    return time.perf_counter() - start, result


def first_stdout(result: dict) -> str:
    return next(c["text"] for c in result["content"] if c.get("description") == "stdout")


def container_endpoint(container) -> tuple[str, str]:
    """A sandbox container's agent URL where its own server calls it (a published loopback port,
    as upstream's and the fleet's DOCKER_ACCESS_MODE=port; else its bridge address, as the
    fleet's default) and its bearer (the fleet's label, else the ``SECRET_TOKEN`` an upstream
    image reads)."""
    published = (container.attrs["NetworkSettings"].get("Ports") or {}).get("80/tcp")
    base = (f"http://127.0.0.1:{published[0]['HostPort']}" if published
            else bridge_url(container.attrs))
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"] or [])
    token = (container.labels or {}).get("io.sandbox-fleet.secret") or env.get("SECRET_TOKEN", "")
    return f"{base}/fastapi", token


def bench_acquire(fleet: LocalFleet, sessions: int, batch: int) -> tuple[dict, dict]:
    """Pool hits only: each batch takes what the pool holds, then waits for the refill (untimed)."""
    acquire, release = [], []
    done = 0
    while done < sessions:
        fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] >= batch,
                       timeout=120, what="a full pool")
        names = []
        for _ in range(min(batch, sessions - done)):
            start = time.perf_counter()
            name = fleet.data("create_from_pool", {"sandbox_type": "base",
                                                   "meta": {"session_ctx_id": f"bench{done}"}},
                              allow_null=False)
            result = fleet.data("call_tool", {"identity": name, **ECHO})
            acquire.append(time.perf_counter() - start)
            assert first_stdout(result) == "hi\n", result
            names.append(name)
            done += 1
        for name in names:
            elapsed, ok = timed(fleet.data, "release", {"identity": name})
            assert ok is True
            release.append(elapsed)
    return percentiles(acquire), percentiles(release)


def bench_calls(fleet: LocalFleet, docker_client, calls: int) -> tuple[dict, dict]:
    name = fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}}, allow_null=False)
    pool = int(fleet.values["POOL_SIZE"])
    # Time the call path, not a container start: let beat replace the pool sandbox first.
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] >= pool,
                   timeout=120, what="the pool refilled")
    try:
        base, token = container_endpoint(docker_client.containers.get(name))
        direct = requests.Session()  # the sandbox's secret is in a label, never in its env
        direct.headers["Authorization"] = f"Bearer {token}"
        url = f"{base}/tools/run_shell_command"
        via_fleet, straight = [], []
        for _ in range(20):  # warm both paths' connections
            fleet.data("call_tool", {"identity": name, **ECHO})
            direct.post(url, json={"command": "echo hi"}).raise_for_status()
        for _ in range(calls):
            elapsed, _ = timed(fleet.data, "call_tool", {"identity": name, **ECHO})
            via_fleet.append(elapsed)
            elapsed, response = timed(direct.post, url, {"command": "echo hi"})
            straight.append(elapsed)
        return percentiles(via_fleet), percentiles(straight)
    finally:
        fleet.data("release", {"identity": name})


def bench_cold(fleet: LocalFleet, count: int) -> dict:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        name = fleet.data("create", {"sandbox_type": "base"}, allow_null=False)
        result = fleet.data("call_tool", {"identity": name, **ECHO})
        samples.append(time.perf_counter() - start)
        assert first_stdout(result) == "hi\n"
        fleet.data("release", {"identity": name})
    return percentiles(samples)


def idle_memory(fleet: LocalFleet, docker_client, settle: float) -> dict:
    time.sleep(settle)
    usages = []
    for container in fleet.containers(docker_client):
        stats = container.stats(stream=False)["memory_stats"]
        cache = stats.get("stats", {}).get("cache", stats.get("stats", {}).get("inactive_file", 0))
        usages.append((stats["usage"] - cache) / 2**20)
    return {"n": len(usages), "mean_mib": round(statistics.fmean(usages), 2) if usages else None,
            "max_mib": round(max(usages), 2) if usages else None}


@click.command()
@click.option("--sessions", default=200, show_default=True, help="pool-hit sessions to time")
@click.option("--calls", default=500, show_default=True, help="tool calls to time")
@click.option("--cold", default=20, show_default=True, help="cold creates to time")
@click.option("--pool", default=10, show_default=True, help="POOL_SIZE during the acquire runs")
def main(sessions: int, calls: int, cold: int, pool: int) -> None:
    """Measure the fleet's latencies and idle memory on this machine."""
    docker_client = docker.from_env()
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="sandbox-fleet-bench-") as tmp:
        fleet = LocalFleet(Path(tmp) / "pooled", POOL_SIZE=pool).start()
        try:
            click.echo(f"acquire: {sessions} pool-hit sessions (pool {pool})...", err=True)
            results["acquire_to_first_result"], results["release"] = bench_acquire(
                fleet, sessions, pool)
            click.echo(f"calls: {calls} via the fleet and straight to the agent...", err=True)
            results["call_tool_via_fleet"], results["call_direct_to_agent"] = bench_calls(
                fleet, docker_client, calls)
            results["call_overhead_p50_ms"] = round(
                results["call_tool_via_fleet"]["p50_ms"] - results["call_direct_to_agent"]["p50_ms"], 2)
            fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] >= pool,
                           timeout=120, what="a full pool")
            results["idle_memory_warm_sandbox"] = idle_memory(fleet, docker_client, settle=5)
        finally:
            fleet.stop()
        fleet = LocalFleet(Path(tmp) / "cold", POOL_SIZE=0).start()
        try:
            click.echo(f"cold: {cold} creates with no pool...", err=True)
            results["cold_create_to_first_result"] = bench_cold(fleet, cold)
        finally:
            fleet.stop()

    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    click.echo(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
