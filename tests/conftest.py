"""Shared fixtures: a real redis-server, and whole fleets run with `runtime-sandbox-server`.

Everything talks over loopback or unix sockets. Docker tests need a running engine and the base
image; they skip with the reason where those are missing, except under CI (or
SANDBOX_FLEET_REQUIRE_DOCKER=1), where a missing engine or image is a failure, not a skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from sandbox_core.settings import parse_settings
from sandbox_core.store import Store

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "agentscope/runtime-sandbox-base:latest"
REQUIRE_DOCKER = bool(os.environ.get("CI") or os.environ.get("SANDBOX_FLEET_REQUIRE_DOCKER"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A private redis-server on a unix socket for the whole test session."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/setup.sh installs it)")
    folder = tmp_path_factory.mktemp("redis")
    sock = folder / "redis.sock"
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.02)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)


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

def docker_ready() -> str | None:
    """None if Docker and the base image are usable, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as e:  # the reason is what the skip says
        return f"Docker or {BASE_IMAGE} unavailable: {type(e).__name__}: {e}"
    return None


@pytest.fixture(scope="session")
def docker_client():
    reason = docker_ready()
    if reason:
        if REQUIRE_DOCKER:
            pytest.fail(reason)
        pytest.skip(reason)
    import docker

    return docker.from_env()


class Fleet:
    """A whole fleet on this machine, started with the real command, stopped with SIGTERM."""

    def __init__(self, tmp: Path, **settings: object) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(8)
        self.prefix = f"sftest_{secrets.token_hex(3)}_"
        start = 20000 + secrets.randbelow(400) * 100
        values = {
            "PORT": self.port,
            "BEARER_TOKEN": self.token,
            "CONTAINER_PREFIX_KEY": self.prefix,
            "FLEET_HOST_NAME": f"host-{secrets.token_hex(3)}",
            "DEFAULT_MOUNT_DIR": str(tmp / "mounts"),
            "PORT_RANGE": f"[{start},{start + 100}]",
            "POOL_SIZE": 1,
            "FLEET_WORKER_CONCURRENCY": 8,
            "FLEET_CALL_CONCURRENCY": 16,
        }
        values.update(settings)
        self.values = {k: str(v) for k, v in values.items()}
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "fleet.env"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "fleet.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> Fleet:
        env = {k: v for k, v in os.environ.items() if k not in self.values}
        env.pop("REDIS_URL", None)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox_cli.server", "--config", str(self.config), *extra],
                cwd=self.config.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"fleet exited:\n{self.log.read_text()[-3000:]}"
            try:
                if requests.get(f"{self.url}/health", timeout=5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"fleet did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 90) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def post(self, route: str, body: dict | None = None, token: str | None = "default",
             **kwargs) -> requests.Response:
        headers = {}
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(f"{self.url}/{route}", json=body if body is not None else {},
                             headers=headers, timeout=kwargs.pop("timeout", 120), **kwargs)

    def get(self, route: str) -> requests.Response:
        return requests.get(f"{self.url}/{route}", headers={"Authorization": f"Bearer {self.token}"},
                            timeout=30)

    def data(self, route: str, body: dict | None = None):
        response = self.post(route, body)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def containers(self, docker_client) -> list:
        return docker_client.containers.list(all=True, filters={"name": self.prefix})

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def make_fleet(tmp_path, docker_client):
    """Start fleets with given settings; each is stopped and checked for leaks afterwards."""
    fleets: list[Fleet] = []

    def make(extensions: tuple[str, ...] = (), **settings: object) -> Fleet:
        folder = tmp_path / f"fleet{len(fleets)}"
        folder.mkdir(parents=True, exist_ok=True)
        fleet = Fleet(folder, **settings)
        fleets.append(fleet)
        return fleet.start(*(f"--extension={e}" for e in extensions))

    yield make
    for fleet in fleets:
        fleet.stop()
        for container in fleet.containers(docker_client):
            container.remove(force=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, docker_client):
    """One fleet shared by a test module (POOL_SIZE=2), checked for leaks when the module ends."""
    tmp = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(tmp, POOL_SIZE=2).start()
    yield fleet
    fleet.stop()
    leaked = fleet.containers(docker_client)
    for container in leaked:
        container.remove(force=True)
    assert not leaked, f"containers left after SIGTERM: {[c.name for c in leaked]}"


@pytest.fixture
def raw_redis(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)
