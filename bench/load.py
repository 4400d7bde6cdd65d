"""A bounded load test on loopback: ``python -m bench.load`` (full size: 100 sessions).

Many agentscope-runtime SDK sessions at once, each: enter (``/create_from_pool``), N shell calls,
exit (``/release``), against a fleet of two worker hosts on this machine sharing one Redis. It
counts errors, address collisions (two live sandboxes of one host at one address) and containers left
behind, and prints throughput and latency percentiles. It stops by itself: every request has the
SDK's timeout and the run a bounded number of sessions.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import docker

from tests.localfleet import LocalFleet, private_redis

from .fleet_bench import percentiles


def one_session(fleet: LocalFleet, calls: int, timings: dict, held: list, lock: threading.Lock):
    from agentscope_runtime.sandbox import BaseSandbox

    started = time.perf_counter()
    sandbox = BaseSandbox(base_url=fleet.url, bearer_token=fleet.token)
    sandbox.__enter__()
    entered = time.perf_counter()
    try:
        if not sandbox.sandbox_id or sandbox.sandbox_id.startswith("Error"):
            raise RuntimeError(f"create failed: {sandbox.sandbox_id}")
        info = sandbox.get_info()
        address = info["url"]  # its bridge address, or 127.0.0.1:<host port> (DOCKER_ACCESS_MODE)
        call_times = []
        for i in range(calls):
            t = time.perf_counter()
            result = sandbox.run_shell_command(command=f"echo {i}")
            call_times.append(time.perf_counter() - t)
            text = [c["text"] for c in result["content"] if c.get("description") == "stdout"]
            if text != [f"{i}\n"]:
                raise RuntimeError(f"call {i} answered {result}")
    finally:
        t = time.perf_counter()
        sandbox.__exit__(None, None, None)
        released = time.perf_counter()
    with lock:
        timings["create"].append(entered - started)
        timings["call"].extend(call_times)
        timings["release"].append(released - t)
        held.append((info["host"], address, entered, t))


def collisions(held: list) -> int:
    """Pairs of sandboxes that held the same address of the same host at the same time."""
    count = 0
    by_address: dict = {}
    for host, address, start, end in held:
        by_address.setdefault((host, address), []).append((start, end))
    for spans in by_address.values():
        spans.sort()
        count += sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False) if start < end)
    return count


def run_load(fleet: LocalFleet, sessions: int, calls: int, concurrency: int) -> dict:
    timings: dict[str, list[float]] = {"create": [], "call": [], "release": []}
    held: list = []
    errors: list[str] = []
    lock = threading.Lock()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one_session, fleet, calls, timings, held, lock)
                   for _ in range(sessions)]
        for future in futures:
            try:
                future.result()
            except Exception as e:  # counted and reported, never hidden
                errors.append(f"{type(e).__name__}: {e}")
    elapsed = time.perf_counter() - started
    return {
        "sessions": sessions, "calls_per_session": calls, "concurrency": concurrency,
        "errors": len(errors), "error_samples": errors[:5],
        "address_collisions": collisions(held),
        "hosts_used": sorted({h for h, *_ in held}),
        "elapsed_s": round(elapsed, 2),
        "sessions_per_s": round(len(held) / elapsed, 2),
        "calls_per_s": round(len(timings["call"]) / elapsed, 2),
        "create": percentiles(timings["create"]) if timings["create"] else None,
        "call": percentiles(timings["call"]) if timings["call"] else None,
        "release": percentiles(timings["release"]) if timings["release"] else None,
    }


def two_host_fleet(folder: Path, redis_url: str, **settings) -> tuple[LocalFleet, object]:
    fleet = LocalFleet(folder, REDIS_ENABLED="true", REDIS_URL=redis_url, WORKERS=2, **settings)
    start = int(fleet.values["PORT_RANGE"].strip("[]").split(",")[0])
    fleet.values["PORT_RANGE"] = f"[{start},{start + 200}]"
    fleet.config.write_text("".join(f"{k}={v}\n" for k, v in fleet.values.items()))
    fleet.start()
    other = fleet.add_host(fleet.values["FLEET_HOST_NAME"] + "-b", (start + 1000, start + 1200))
    return fleet, other


@click.command()
@click.option("--sessions", default=100, show_default=True)
@click.option("--calls", default=10, show_default=True, help="shell calls per session")
@click.option("--concurrency", default=100, show_default=True, help="sessions at once")
@click.option("--pool", default=10, show_default=True, help="POOL_SIZE")
def main(sessions: int, calls: int, concurrency: int, pool: int) -> None:
    """Run concurrent SDK sessions against a two-host fleet on this machine."""
    docker_client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="sandbox-fleet-load-") as tmp, \
            private_redis(Path(tmp)) as redis_url:
        fleet, other = two_host_fleet(Path(tmp) / "fleet", redis_url, POOL_SIZE=pool)
        try:
            fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] >= pool,
                           timeout=120, what="a full pool")
            result = run_load(fleet, sessions, calls, concurrency)
        finally:
            other.stop()
            fleet.stop()
        result["leaked_containers"] = len(fleet.containers(docker_client))
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
