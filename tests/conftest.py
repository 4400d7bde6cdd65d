"""Shared fixtures: a real redis-server, and whole fleets run with `runtime-sandbox-server`.

Everything talks over loopback or unix sockets. Docker tests need a running engine and the base
image; they skip with the reason where those are missing, except under CI (or
SANDBOX_FLEET_REQUIRE_DOCKER=1), where a missing engine or image is a failure, not a skip:
``docker_unavailable``/``require_docker``/``skip_or_fail`` below are the one place deciding that.
tests/local/ runs fleets on the test-only local-process backend instead (docs/contributing.md).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from sandbox_core.settings import parse_settings
from sandbox_core.store import Store
from tests.localfleet import LocalFleet as Fleet
from tests.localfleet import private_redis

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "agentscope/runtime-sandbox-base:latest"
#: The base image with an agent that starts 8 s late (the crash tests' creates stay in flight).
SLOW_IMAGE = "sandbox-fleet-test/slowstart:latest"
REQUIRE_DOCKER = bool(os.environ.get("CI") or os.environ.get("SANDBOX_FLEET_REQUIRE_DOCKER"))


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (a CI job cancelled) ends as Ctrl-C does: pytest then tears
    # down every fixture, so the fleets, agents and containers the tests started go with it.
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A private redis-server on a unix socket for the whole test session."""
    with private_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def clean_registry():
    """No custom sandbox type registered before or after the test."""
    from sandbox_core.registry import SandboxRegistry

    SandboxRegistry.clear()
    yield
    SandboxRegistry.clear()


@pytest.fixture
def settings(redis_url):
    return parse_settings({"REDIS_URL": redis_url, "FLEET_HOST_NAME": "test-host",
                           "PORT_RANGE": "[40000,40010]"})


@pytest.fixture
def store(settings) -> Store:
    store = Store.connect(settings)
    store.redis.flushdb()
    return store


# -- Docker and whole fleets ------------------------------------------------------------------

def docker_unavailable(image: str = BASE_IMAGE, runtime: str | None = None) -> str | None:
    """Why Docker (with ``runtime`` registered, and ``image`` built) cannot be used, or None."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            client.ping()
            if runtime and runtime not in client.info().get("Runtimes", {}):
                return (f"dockerd has no {runtime!r} runtime registered (scripts/setup --gvisor "
                        "registers it)")
            client.images.get(image)
        finally:
            client.close()
    except Exception as e:  # the reason is what the skip says
        return f"Docker or {image} unavailable: {type(e).__name__}: {e}"
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI (or SANDBOX_FLEET_REQUIRE_DOCKER=1), where a missing
    engine, image or tool must not pass unnoticed."""
    if REQUIRE_DOCKER:
        pytest.fail(reason)
    pytest.skip(reason)


def require_docker(image: str = BASE_IMAGE, runtime: str | None = None) -> None:
    reason = docker_unavailable(image, runtime)
    if reason:
        skip_or_fail(reason)


@pytest.fixture(scope="session")
def docker_client():
    require_docker()
    import docker

    return docker.from_env()


@pytest.fixture(scope="module")
def slow_image(docker_client):
    """The base image with an agent that starts 8 s late: a create stays in flight long enough
    to kill what runs it (tests/local replaces it with the local backend's own)."""
    dockerfile = (f"FROM {BASE_IMAGE}\n"
                  'CMD ["sh", "-c", "sleep 8; exec python3 -m sandbox_agent"]\n').encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=SLOW_IMAGE, rm=True)
    yield SLOW_IMAGE
    docker_client.images.remove(SLOW_IMAGE, force=True)


def container_starts(engine, prefix: str, since: float) -> list[str]:
    """Names of ``prefix``'s containers in every start ``engine`` (a Docker client, or tests/local's
    engine) recorded from ``since`` (epoch seconds) to now: an exact count, not samples."""
    events = engine.events(since=int(since), until=int(time.time()) + 1,
                           filters={"type": "container", "event": "start"}, decode=True)
    names = [e.get("Actor", {}).get("Attributes", {}).get("name", "") for e in events]
    return [name for name in names if name.startswith(prefix)]


def container_start_times(engine, prefix: str, since: float) -> list[float]:
    """When each of ``prefix``'s containers started from ``since`` on (epoch seconds, sorted)."""
    events = engine.events(since=int(since), until=int(time.time()) + 1,
                           filters={"type": "container", "event": "start"}, decode=True)
    return sorted(e["timeNano"] / 1e9 if "timeNano" in e else float(e["time"]) for e in events
                  if e.get("Actor", {}).get("Attributes", {}).get("name", "").startswith(prefix))


#: Small thread counts: the machine has two cores and tests run several fleets.
_FAST = {"POOL_SIZE": 1, "FLEET_WORKER_CONCURRENCY": 8, "FLEET_CALL_CONCURRENCY": 16}


@contextlib.contextmanager
def fleet_factory(folder: Path, engine, loaded: tuple[str, ...] = (),
                  **base: object) -> Iterator[Callable[..., Fleet]]:
    """``make(extensions=(), **settings)`` starts a fleet in ``folder`` (with ``base`` settings and
    the ``loaded`` extensions); after the block each is stopped and its sandboxes, as ``engine`` (a
    Docker client, or tests/local's engine) lists them, removed."""
    fleets: list[Fleet] = []

    def make(extensions: tuple[str, ...] = (), **settings: object) -> Fleet:
        fleet = Fleet(folder / f"fleet{len(fleets)}", **{**_FAST, **base, **settings})
        fleets.append(fleet)
        return fleet.start(*(f"--extension={e}" for e in (*loaded, *extensions)))

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.stop()
            for container in fleet.containers(engine):
                container.remove(force=True)


@pytest.fixture
def make_fleet(tmp_path, docker_client):
    """Start fleets with given settings; each is stopped and checked for leaks afterwards."""
    with fleet_factory(tmp_path, docker_client) as make:
        yield make


@contextlib.contextmanager
def running_fleet(folder: Path, docker_client, extensions: tuple[str, ...] = (),
                  **settings: object) -> Iterator[Fleet]:
    """A fleet for the block (for a module-scoped fixture), stopped with SIGTERM after it and
    checked for leaked containers."""
    fleet = Fleet(folder, **{**_FAST, **settings}).start(*(f"--extension={e}" for e in extensions))
    try:
        yield fleet
    finally:
        fleet.stop()
        leaked = fleet.containers(docker_client)
        for container in leaked:
            container.remove(force=True)
    assert not leaked, f"containers left after SIGTERM: {[c.name for c in leaked]}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, docker_client):
    """One fleet shared by a test module (POOL_SIZE=2), checked for leaks when the module ends."""
    with running_fleet(tmp_path_factory.mktemp("fleet"), docker_client, POOL_SIZE=2) as fleet:
        yield fleet


@pytest.fixture
def raw_redis(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)
