"""sandbox-fleet and the upstream server side by side, in one run: ``python -m bench.sidebyside``.

It installs upstream (agentscope-runtime 1.1.6.post2) in its own venv and builds its base image
offline (bench/upstream.py), then, for each round, starts each server fresh (alternating which goes
first), waits until its pool of POOL_SIZE answers, runs a warm-up session, and runs the same
workloads against it (bench/workloads.py): steady churn, N concurrent long sessions, a burst past the
pool, the quiet-window call vs the direct call, idle memory per sandbox, and cold creates. Between
workloads it waits until the pool has refilled and every container in it answers. Each server is
stopped after its round and its containers removed (checked by their name prefix).

Results go to bench/results/sidebyside-<time>.json; a Markdown table (both values and the ratio
fleet/upstream) to stdout.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import docker
import requests

from tests.localfleet import LocalFleet

from . import profile, upstream, workloads
from .fleet_bench import idle_memory
from .report import cpu_markdown, markdown

SETTLE_TIMEOUT = 300.0
# --profile: the fleet's processes py-spy samples during churn, by a marker in their command line
PROFILED = {"api": "gunicorn", "calls worker": ".calls", "lifecycle worker": "sandbox.create",
            "beat": "sandbox_workers beat"}


def pool_answers(server: LocalFleet, docker_client, expected: int) -> bool:
    """Exactly ``expected`` containers of the server, all running and answering ``/healthz``."""
    containers = server.containers(docker_client)
    if len(containers) != expected or any(c.status != "running" for c in containers):
        return False
    for container in containers:
        try:
            url, token = workloads.container_endpoint(container)
            if requests.get(f"{url}/healthz", headers={"Authorization": f"Bearer {token}"},
                            timeout=2).status_code != 200:
                return False
        except (requests.RequestException, KeyError, IndexError, TypeError):
            return False
    return True


def settler(kind: str, server: LocalFleet, docker_client, pool: int) -> Callable[..., float]:
    """A call that waits (bounded) until the pool is full and quiet, with ``held`` sessions'
    sandboxes besides it and no container starting or stopping; returns the seconds waited."""
    def ready(held: int) -> bool:
        if not isinstance(server, upstream.UpstreamServer):
            warm = server.get("fleet/status").json()["pools"]["base"]["warm"]
            if warm < pool:
                return False
        return pool_answers(server, docker_client, pool + held)

    def settle(held: int = 0) -> float:
        start = time.monotonic()
        try:
            server.wait_for(lambda: ready(held), timeout=SETTLE_TIMEOUT,
                            what=f"{kind}: a full pool that answers")
        except AssertionError:
            click.echo(f"  {kind}: the pool did not settle in {SETTLE_TIMEOUT:.0f} s; going on",
                       err=True)
        return round(time.monotonic() - start, 2)

    return settle


def start_server(kind: str, folder: Path, python: Path, pool: int) -> LocalFleet:
    if kind == "fleet":
        return LocalFleet(folder, POOL_SIZE=pool).start(timeout=120)
    return upstream.UpstreamServer(folder, python, POOL_SIZE=pool).start(timeout=120)


#: Starts one server for a round, given the round's folder and POOL_SIZE.
ServerFactory = Callable[[Path, int], LocalFleet]


def remove_leftovers(server: LocalFleet, docker_client) -> int:
    """Remove whatever the stopped server left behind; returns how many there were."""
    left = server.containers(docker_client)
    for container in left:
        subprocess.run(["docker", "rm", "-f", container.id], capture_output=True, timeout=60)
    return len(left)


def one_round(kind: str, folder: Path, start: ServerFactory, docker_client, sizes: dict) -> dict:
    """Every workload against a server started fresh (``kind`` names it in messages)."""
    pool = sizes["pool"]
    started = time.monotonic()
    server = start(folder, pool)
    result: dict = {}
    try:
        client = workloads.Client(server.url, server.token)
        settle = settler(kind, server, docker_client, pool)
        settle()  # upstream's containers take ~13 s to answer: this is its warm-up
        result["pool_ready_after_start_s"] = round(time.monotonic() - started, 2)
        warmup = workloads.churn(client, 2, 0.5, 5, deadline_s=60)  # untimed: first connections
        result["warmup_failures"] = warmup["failures"]
        settle()
        click.echo(f"  {kind}: churn, {sizes['sessions']} sessions every {sizes['interval']} s", err=True)
        spies, cpu_before = [], profile.cpu_snapshot(server.proc.pid)
        if sizes.get("profile") and not isinstance(server, upstream.UpstreamServer):
            parts = {name: pids[0] for name, marker in PROFILED.items()
                     for pids in [server.pids(marker)] if pids}
            spies = profile.start_pyspy(parts, Path(sizes["profile"]) / folder.name,
                                        sizes["sessions"] * sizes["interval"])
        result["churn"] = workloads.churn(client, sizes["sessions"], sizes["interval"], 5,
                                          deadline_s=sizes["sessions"] * sizes["interval"] + 300)
        result["churn"]["cpu_s"] = profile.cpu_delta(cpu_before, profile.cpu_snapshot(server.proc.pid))
        for name, out, spy in spies:
            spy.wait(timeout=120)
            result["churn"].setdefault("py_spy", {})[name] = profile.summarise(out)
        result["churn"]["settle_after_s"] = settle()
        click.echo(f"  {kind}: {sizes['agents']} agents x {sizes['calls']} calls", err=True)
        result["concurrent"] = workloads.concurrent(
            client, sizes["agents"], sizes["calls"],
            cpu_snapshot=lambda: profile.cpu_snapshot(server.proc.pid))
        result["concurrent"]["settle_after_s"] = settle()
        click.echo(f"  {kind}: a burst of {sizes['burst']} sessions", err=True)
        result["burst"] = workloads.burst(client, sizes["burst"])
        result["burst"]["settle_after_s"] = settle()
        click.echo(f"  {kind}: quiet window, {sizes['quiet']} calls", err=True)
        result["quiet"] = workloads.quiet_calls(client, docker_client, sizes["quiet"], settle)
        settle()
        result["idle_memory"] = idle_memory(server, docker_client, settle=5)
        click.echo(f"  {kind}: {sizes['cold']} cold creates", err=True)
        result["cold"] = workloads.cold(client, sizes["cold"])
    finally:
        result["stop_rc"] = server.stop(timeout=180)
        result["leftover_containers"] = remove_leftovers(server, docker_client)
        result["round_s"] = round(time.monotonic() - started, 1)
    return result


def machine() -> dict:
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "memory_gib": round(total_kib / 2**20, 1),
            "loadavg_start": os.getloadavg()}


def workload_options(func: Callable) -> Callable:
    """The sizes of the workloads, shared by this command and ``bench.ab``; they reach the
    command as one ``sizes`` dict."""
    options = [
        click.option("--pool", default=8, show_default=True, help="POOL_SIZE of every server"),
        click.option("--rounds", default=2, show_default=True,
                     help="rounds; each starts every server fresh"),
        click.option("--sessions", default=40, show_default=True, help="churn: sessions"),
        click.option("--interval", default=0.5, show_default=True,
                     help="churn: seconds between arrivals"),
        click.option("--agents", default=8, show_default=True,
                     help="concurrent: sessions held at once"),
        click.option("--calls", default=50, show_default=True, help="concurrent: calls per session"),
        click.option("--burst", "burst_size", default=0,
                     help="burst: sessions at once [default: 2 x pool]"),
        click.option("--quiet", default=200, show_default=True,
                     help="quiet window: calls timed each way"),
        click.option("--cold", default=5, show_default=True, help="cold creates to time"),
        click.option("--profile", "profile_dir", default=None, type=click.Path(file_okay=False),
                     help="py-spy the fleet's processes during churn into this folder, a "
                          "subfolder per round (needs the bench extra)"),
    ]

    @functools.wraps(func)  # keeps the command's own options (click's __click_params__)
    def wrapper(pool: int, rounds: int, sessions: int, interval: float, agents: int, calls: int,
                burst_size: int, quiet: int, cold: int, profile_dir: str | None, **rest: object):
        sizes = {"pool": pool, "rounds": rounds, "sessions": sessions, "interval": interval,
                 "agents": agents, "calls": calls, "burst": burst_size or 2 * pool,
                 "quiet": quiet, "cold": cold, "profile": profile_dir}
        return func(sizes=sizes, **rest)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def run_rounds(name: str, servers: dict[str, ServerFactory], sizes: dict, extra: dict) -> dict:
    """Every round runs every server in turn (the order alternating between rounds); the JSON
    goes to bench/results/<name>-<time>.json after each server's round."""
    docker_client = docker.from_env()
    results: dict = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
                     "sizes": sizes, **extra, "rounds": []}
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    kinds = list(servers)
    with tempfile.TemporaryDirectory(prefix=f"sandbox-fleet-{name}-") as tmp:
        for number in range(sizes["rounds"]):
            order = kinds if number % 2 == 0 else kinds[::-1]
            entry: dict = {}
            results["rounds"].append(entry)
            for kind in order:
                click.echo(f"round {number + 1}/{sizes['rounds']}: {kind}", err=True)
                entry[kind] = one_round(kind, Path(tmp) / f"{kind}-{number}", servers[kind],
                                        docker_client, sizes)
                entry[kind]["loadavg_after"] = os.getloadavg()
                path.write_text(json.dumps(results, indent=2))  # a stopped run keeps what it measured
    results["machine"]["loadavg_end"] = os.getloadavg()
    path.write_text(json.dumps(results, indent=2))
    click.echo(f"results: {path}", err=True)
    return results


@click.command()
@workload_options
@click.option("--only", type=click.Choice(["both", "fleet", "upstream"]), default="both",
              show_default=True, help="run one server only (for debugging the bench)")
def main(sizes: dict, only: str) -> None:
    """Run the same workloads against sandbox-fleet and upstream's server, alternating."""
    kinds = ["fleet", "upstream"] if only == "both" else [only]
    python = upstream.ensure_venv()
    if "upstream" in kinds:
        upstream.ensure_image(python)
    servers = {kind: (lambda folder, size, kind=kind: start_server(kind, folder, python, size))
               for kind in kinds}
    results = run_rounds("sidebyside", servers, sizes,
                         {"upstream": {"version": upstream.VERSION, "image": upstream.IMAGE}})
    click.echo(markdown(results))
    for workload in ("churn", "concurrent"):
        click.echo()
        click.echo(cpu_markdown(results, tuple(kinds), workload))


if __name__ == "__main__":
    main()
