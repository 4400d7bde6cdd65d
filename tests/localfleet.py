"""A whole fleet on this machine in a subprocess, for tests and benchmarks.

It runs the real ``runtime-sandbox-server`` with a private config (its own port, token, container
prefix, host name, port range and private Redis), so several can run side by side without touching
each other's sandboxes, and stops it with SIGTERM as an operator would. It lives with the tests
(bench/ uses it too) because it needs ``requests``, a test dependency the installed package lacks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from sandbox_cli import commands, orphans
from sandbox_core import polling


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A redis-server on a unix socket in ``folder`` for as long as the block runs; yields its URL."""
    sock = folder / "redis.sock"
    proc = subprocess.Popen(orphans.wrap(commands.redis_server(str(sock), str(folder))),
                            stdout=subprocess.DEVNULL)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("redis-server exited at start")
            return sock.exists()

        if not polling.poll(up, 10, first=0.02, most=0.05):
            raise RuntimeError("redis-server did not start")
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalFleet:
    def __init__(self, folder: Path, **settings: object) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.token = secrets.token_hex(8)
        self.prefix = f"sftest_{secrets.token_hex(3)}_"
        # Below Linux's ephemeral ports (32768+), which outgoing connections may take at any time.
        start = 20000 + secrets.randbelow(100) * 100
        values: dict[str, object] = {
            "PORT": self.port,
            "BEARER_TOKEN": self.token,
            "CONTAINER_PREFIX_KEY": self.prefix,
            "FLEET_HOST_NAME": f"host-{secrets.token_hex(3)}",
            "DEFAULT_MOUNT_DIR": str(folder / "mounts"),
            "PORT_RANGE": f"[{start},{start + 100}]",
        }
        values.update(settings)
        self.values = {k: str(v) for k, v in values.items()}
        self.config = folder / "fleet.env"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in self.values.items()))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "fleet.log"
        self.proc: subprocess.Popen | None = None
        self.extensions: list[str] = []  # the --extension values, for the hosts added later
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    # -- process -----------------------------------------------------------------------------

    def start(self, *args: str, timeout: float = 60) -> LocalFleet:
        self.extensions = [a.split("=", 1)[1] for a in args if a.startswith("--extension=")]
        env = {k: v for k, v in os.environ.items() if k not in self.values and k != "REDIS_URL"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                orphans.wrap([sys.executable, "-m", "sandbox_cli.server", "--config", str(self.config),
                              *args]),
                cwd=self.config.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the fleet exited:\n{self.tail()}")
            return polling.http_ok(f"{self.url}/health", timeout=5)

        if polling.poll(up, timeout, first=0.05, most=0.1):
            return self
        raise RuntimeError(f"the fleet did not start in {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 90) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def pids(self, marker: str) -> list[int]:
        """The fleet's parts (children of its server) whose command line contains ``marker``."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if marker in cmdline and self.proc and parent == self.proc.pid:
                found.append(int(entry.name))
        return found

    def add_host(self, name: str, port_range: tuple[int, int], **settings: object) -> LocalHost:
        """Another worker host (its own name, ports and queues) on the same Redis as this fleet."""
        return LocalHost(self, name, port_range, **settings).start()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def story(self, chars: int = 3000) -> str:
        """What a failed wait shows: every warning and error line of the whole log (a part that
        died, a lost broker), then its last ``chars`` characters."""
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace")
        marked = [line for line in text.splitlines()
                  if " WARNING [" in line or " ERROR [" in line or " CRITICAL [" in line]
        return "\n".join(["-- warnings and errors --", *marked[-40:], "-- last lines --",
                          text[-chars:]])

    # -- HTTP --------------------------------------------------------------------------------

    def post(self, route: str, body: dict | None = None, token: str | None = "default",
             timeout: float = 120) -> requests.Response:
        if token == "default":
            return self.http.post(f"{self.url}/{route}", json=body or {}, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(f"{self.url}/{route}", json=body or {}, headers=headers, timeout=timeout)

    def get(self, route: str) -> requests.Response:
        return self.http.get(f"{self.url}/{route}", timeout=30)

    def data(self, route: str, body: dict | None = None, allow_null: bool = True) -> Any:
        """The ``data`` of a 200 answer; anything else (or null, if not allowed) raises."""
        response = self.post(route, body)
        if response.status_code != 200 or (response.json()["data"] is None and not allow_null):
            raise AssertionError(f"{route}: HTTP {response.status_code}: {response.text}")
        return response.json()["data"]

    # -- observing ---------------------------------------------------------------------------

    def containers(self, docker_client) -> list:
        """This fleet's containers. docker-py inspects each one it lists, so a container removed
        in between makes the listing fail: list again."""
        import docker.errors

        for _ in range(10):
            try:
                return docker_client.containers.list(all=True, filters={"name": self.prefix})
            except docker.errors.NotFound:
                time.sleep(0.05)
        return docker_client.containers.list(all=True, filters={"name": self.prefix})

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "condition"):
        value = polling.poll(predicate, timeout, first=0.05, most=0.1)
        if value:
            return value
        raise AssertionError(f"timed out waiting for {what}\n{self.story()}")


class LocalHost:
    """A lifecycle and a calls worker for one more host, as an operator adds them: plain
    ``celery -A sandbox_workers worker`` processes with their own settings."""

    def __init__(self, fleet: LocalFleet, name: str, port_range: tuple[int, int],
                 **settings: object) -> None:
        values = {**fleet.values, "FLEET_HOST_NAME": name,
                  "PORT_RANGE": f"[{port_range[0]},{port_range[1]}]",
                  **{k: str(v) for k, v in settings.items()}}
        if "REDIS_URL" not in values:
            raise ValueError("an extra host needs the fleet to use a shared REDIS_URL")
        self.name = name
        self.extensions = fleet.extensions
        self.config = fleet.config.parent / f"host-{name}.env"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        self.log = fleet.config.parent / f"host-{name}.log"
        self.procs: list[subprocess.Popen] = []

    def start(self) -> LocalHost:
        from sandbox_core.settings import EXTENSIONS_VAR, load_settings

        env = {**os.environ, "SANDBOX_FLEET_CONFIG": str(self.config)}
        env.pop("REDIS_URL", None)
        if self.extensions:  # the same types (and test backend) as the fleet's own workers
            env[EXTENSIONS_VAR] = os.pathsep.join(self.extensions)
        settings = load_settings(str(self.config), environ={})
        with open(self.log, "ab") as log:
            for role in ("lifecycle", "calls"):
                self.procs.append(subprocess.Popen(
                    orphans.wrap(commands.worker(settings, role)), env=env, stdout=log,
                    stderr=subprocess.STDOUT, cwd=self.config.parent))
        def ready() -> bool:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"host {self.name} did not start:\n{self.log.read_text()[-3000:]}")
            return self.log.read_text(errors="replace").count(" ready.") >= 2

        if not polling.poll(ready, 60, first=0.05, most=0.1):
            raise RuntimeError(f"host {self.name} did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def stop(self, drain: bool = True) -> None:
        """Release this host's sandboxes (as runtime-sandbox-server does with AUTO_CLEANUP), then
        stop its workers."""
        if drain:
            from sandbox_core.fleet import Fleet
            from sandbox_core.settings import load_settings

            Fleet.connect(load_settings(str(self.config), environ={})).drain(
                self.name, 60, lambda: all(p.poll() is None for p in self.procs))
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
