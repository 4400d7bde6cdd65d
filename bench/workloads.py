"""Workloads that drive any server speaking the sandbox HTTP API (the fleet or upstream's) alike.

Plain HTTP with one persistent ``requests.Session`` per thread, as the SDK keeps one per sandbox.
Every request has a timeout, every loop a bounded count, and every workload a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import requests

from . import profile
from .fleet_bench import ECHO, container_endpoint, first_stdout, percentiles

REQUEST_TIMEOUT = 120.0


class Client:
    """The sandbox API of one server, safe to share between threads."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def data(self, route: str, body: dict) -> Any:
        response = self._session().post(f"{self.url}/{route}", json=body, timeout=REQUEST_TIMEOUT)
        if response.status_code != 200:
            raise RuntimeError(f"{route}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()["data"]

    def acquire(self, ctx: str, cold: bool = False) -> str:
        body: dict = {"sandbox_type": "base"}
        if not cold:
            body["meta"] = {"session_ctx_id": ctx}
        name = self.data("create" if cold else "create_from_pool", body)
        if not name or not isinstance(name, str) or name.startswith("Error"):
            raise RuntimeError(f"create answered {name!r}")
        return name

    def echo(self, name: str) -> None:
        result = self.data("call_tool", {"identity": name, **ECHO})
        if first_stdout(result) != "hi\n":
            raise RuntimeError(f"echo answered {result}")

    def release(self, name: str) -> None:
        self.data("release", {"identity": name})


def _failures(errors: list[str]) -> dict:
    return {"failures": len(errors), "failure_samples": errors[:3]}


def _stats(samples: list[float]) -> dict | None:
    return percentiles(samples) if samples else None


def churn(client: Client, sessions: int, interval: float, calls: int, deadline_s: float) -> dict:
    """A session every ``interval`` s (open loop: arrivals never wait for earlier sessions): claim
    from the pool and ``echo hi`` (acquire), ``calls`` more calls, release."""
    acquire, call, release, errors = [], [], [], []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            start = time.perf_counter()
            name = client.acquire(f"churn{i}")
            try:
                client.echo(name)
                took = [time.perf_counter() - start]
                for _ in range(calls):
                    t = time.perf_counter()
                    client.echo(name)
                    took.append(time.perf_counter() - t)
            finally:
                t = time.perf_counter()
                client.release(name)
                released = time.perf_counter() - t
            with lock:
                acquire.append(took[0])
                call.extend(took[1:])
                release.append(released)
        except Exception as e:  # counted and reported, never hidden
            with lock:
                errors.append(f"{type(e).__name__}: {e}")

    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        futures = []
        for i in range(sessions):
            due = started + i * interval
            if due - started > deadline_s:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            futures.append(pool.submit(one, i))
        wait(futures, timeout=deadline_s)
    return {"sessions": len(futures), "interval_s": interval, "calls_per_session": calls,
            "acquire": _stats(acquire), "call": _stats(call), "release": _stats(release),
            "elapsed_s": round(time.perf_counter() - started, 2), **_failures(errors)}


def concurrent(client: Client, agents: int, calls: int,
               cpu_snapshot: Callable[[], dict] | None = None) -> dict:
    """``agents`` sessions held at once, each making ``calls`` calls in a loop; calls/s over the
    window from the first call to the last answer (claims and releases are not in it). With
    ``cpu_snapshot`` (bench.profile's), the CPU seconds per part over that window too, the bench's
    own process (the client, on the same cores) as "bench client"."""
    errors: list[str] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(agents) as pool:
        names = []
        for future in [pool.submit(client.acquire, f"agent{i}") for i in range(agents)]:
            try:
                names.append(future.result())
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        samples: list[float] = []

        def loop(name: str) -> None:
            for _ in range(calls):
                t = time.perf_counter()
                try:
                    client.echo(name)
                except Exception as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    return
                with lock:
                    samples.append(time.perf_counter() - t)

        before, client_cpu = (cpu_snapshot() if cpu_snapshot else None), time.process_time()
        started = time.perf_counter()
        list(pool.map(loop, names))
        elapsed = time.perf_counter() - started
        cpu = None
        if before is not None:
            cpu = {**profile.cpu_delta(before, cpu_snapshot()),
                   "bench client": round(time.process_time() - client_cpu, 2)}
        for name in names:
            try:
                client.release(name)
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
    return {"agents": len(names), "calls_per_agent": calls, "elapsed_s": round(elapsed, 2),
            "calls_per_s": round(len(samples) / elapsed, 2) if elapsed else None,
            "call": _stats(samples), **({"cpu_s": cpu} if cpu else {}), **_failures(errors)}


def burst(client: Client, sessions: int) -> dict:
    """``sessions`` claims sent at once (more than the pool holds); each is served when its first
    ``echo hi`` answers. All are held until every one is served, then released (not timed)."""
    barrier = threading.Barrier(sessions, timeout=60)
    served: list[float] = []
    errors: list[str] = []
    names: list[str] = []
    lock = threading.Lock()
    start_box: list[float] = []

    def one(i: int) -> None:
        try:
            if barrier.wait() == 0:
                start_box.append(time.perf_counter())
            name = client.acquire(f"burst{i}")
            with lock:
                names.append(name)
            client.echo(name)
            with lock:
                served.append(time.perf_counter())
        except Exception as e:
            with lock:
                errors.append(f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(one, range(sessions)))
        begin = start_box[0] if start_box else time.perf_counter()
        ends = [t - begin for t in served]
        for name in names:
            try:
                client.release(name)
            except Exception as e:
                errors.append(f"release {type(e).__name__}: {e}")
    return {"sessions": sessions, "served": len(ends),
            "all_served_s": round(max(ends), 2) if len(ends) == sessions else None,
            "served_p50_s": round(sorted(ends)[len(ends) // 2], 2) if ends else None,
            **_failures(errors)}


def cold(client: Client, count: int) -> dict:
    """``/create`` (never the pool) then ``echo hi``, one after another; the release is timed too."""
    samples, releases, errors = [], [], []
    for i in range(count):
        try:
            start = time.perf_counter()
            name = client.acquire(f"cold{i}", cold=True)
            try:
                client.echo(name)
                samples.append(time.perf_counter() - start)
            finally:
                t = time.perf_counter()
                client.release(name)
                releases.append(time.perf_counter() - t)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    return {"create_to_first_result": _stats(samples), "release": _stats(releases), **_failures(errors)}


def quiet_calls(client: Client, docker_client, calls: int, settle: Callable[[int], Any]) -> dict:
    """``echo hi`` through the server and straight to the sandbox's agent, interleaved, once the
    pool has refilled (no container starting or stopping while calls are timed)."""
    name = client.acquire("quiet")
    try:
        settle(1)
        info = client.data("get_info", {"identity": name})
        url, token = container_endpoint(docker_client.containers.get(info["container_id"]))
        direct = requests.Session()
        direct.headers["Authorization"] = f"Bearer {token}"
        tool = f"{url}/tools/run_shell_command"
        for _ in range(20):  # warm both paths' connections
            client.echo(name)
            direct.post(tool, json={"command": "echo hi"}, timeout=REQUEST_TIMEOUT).raise_for_status()
        via, straight = [], []
        for _ in range(calls):
            t = time.perf_counter()
            client.echo(name)
            via.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct.post(tool, json={"command": "echo hi"}, timeout=REQUEST_TIMEOUT).raise_for_status()
            straight.append(time.perf_counter() - t)
    finally:
        client.release(name)
    via_stats, direct_stats = percentiles(via), percentiles(straight)
    return {"via_server": via_stats, "direct_to_agent": direct_stats,
            "overhead_p50_ms": round(via_stats["p50_ms"] - direct_stats["p50_ms"], 2)}
