"""``runtime-sandbox-server``: the whole fleet on this machine, with one command.

It starts, and stops in the right order:
  1. a private redis-server on a unix socket, when REDIS_ENABLED is false (upstream's default);
  2. a Celery worker for this host's lifecycle jobs (creates, teardowns) and one for tool calls;
  3. Celery beat (pool refill and the heartbeat reaper);
  4. the API under gunicorn, WORKERS processes.
On Ctrl-C or SIGTERM it stops the API, releases this host's sandboxes if AUTO_CLEANUP, then stops
the workers, beat and Redis. One code path: always Celery, always Redis.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import click
import redis

from backends import backend_class
from sandbox_core import jobs
from sandbox_core.errors import SettingsError
from sandbox_core.fleet import Fleet
from sandbox_core.registry import load_extensions
from sandbox_core.settings import CONFIG_FILE_VAR, EXTENSIONS_VAR, Settings, load_settings

log = logging.getLogger("runtime-sandbox-server")

GUNICORN_THREADS = 64
CLEANUP_WAIT = 60
MAX_RESTARTS_PER_MINUTE = 5


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A .env-style settings file (overrides the environment). Default: ./.env")
@click.option("--extension", "extensions", multiple=True,
              help="A module or .py file registering custom sandbox types (repeatable).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                case_sensitive=False))
def main(config_file: str | None, extensions: tuple[str, ...], log_level: str) -> None:
    """Run the sandbox fleet on this machine: API, workers, beat (and Redis if needed)."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extensions = tuple(_absolute(e) for e in extensions)
    try:
        settings = load_settings(config_file)
        load_extensions(settings, extensions)
        backend_class(settings.CONTAINER_DEPLOYMENT)  # a backend not built yet says so now
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    Supervisor(settings, config_file, extensions, log_level.lower()).run()


class Supervisor:
    def __init__(self, settings: Settings, config_file: str | None, extensions: tuple[str, ...],
                 log_level: str) -> None:
        self.settings = settings
        self.log_level = log_level
        self.env = dict(os.environ)
        if config_file:
            self.env[CONFIG_FILE_VAR] = os.path.abspath(config_file)
        if extensions:
            self.env[EXTENSIONS_VAR] = os.pathsep.join(extensions)
        self.stopping = threading.Event()
        self.failed = False
        self.children: dict[str, subprocess.Popen] = {}
        self.argvs: dict[str, list[str]] = {}
        self.restarts: dict[str, list[float]] = {}

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        with ExitStack() as stack:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="sandbox-fleet-"))
            if not self.settings.REDIS_ENABLED and not self.settings.REDIS_URL:
                url = self._start_private_redis(Path(workdir))
                stack.callback(self._stop, "redis")
                self.settings = self.settings.replace(REDIS_URL=url)
                self.env["REDIS_URL"] = url
            self._check_redis()
            host = self.settings.FLEET_HOST_NAME
            stack.callback(self._stop_workers)
            self._spawn("worker-lifecycle", self._celery(
                "worker", "-Q", f"{jobs.CREATE_QUEUE},{jobs.host_queue(host)}",
                "-n", f"lifecycle@{host}", "--concurrency", str(self.settings.FLEET_WORKER_CONCURRENCY)))
            self._spawn("worker-calls", self._celery(
                "worker", "-Q", jobs.call_queue(host), "-n", f"calls@{host}",
                "--concurrency", str(self.settings.FLEET_CALL_CONCURRENCY)))
            # Unwound in reverse: API, beat (no more refills), cleanup, workers, Redis.
            stack.callback(self._cleanup)
            stack.callback(self._stop, "beat")
            self._spawn("beat", self._celery("beat", "-s", os.path.join(workdir, "beat-schedule")))
            stack.callback(self._stop, "api")
            self._spawn("api", [
                sys.executable, "-m", "gunicorn", "sandbox_api.wsgi:app",
                "--bind", f"{self.settings.HOST}:{self.settings.PORT}",
                "--workers", str(self.settings.WORKERS), "--worker-class", "gthread",
                "--threads", str(GUNICORN_THREADS), "--timeout", "0", "--log-level", self.log_level,
                *(["--access-logfile", "-"] if self.settings.DEBUG else []),
            ])
            self._announce_when_ready()
            self._watch()
        log.info("stopped")
        if self.failed:
            sys.exit(1)

    # -- children ----------------------------------------------------------------------------

    def _celery(self, *args: str) -> list[str]:
        common = ["--loglevel", self.log_level]
        if args[0] == "worker":
            common += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return [sys.executable, "-m", "celery", "-A", "sandbox_workers", *args, *common]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log.info("starting %s", name)
        self.argvs[name] = argv
        self.children[name] = subprocess.Popen(argv, env=self.env, start_new_session=True)

    def _stop(self, name: str, timeout: float = 20) -> None:
        child = self.children.pop(name, None)
        if child is None or child.poll() is not None:
            return
        log.info("stopping %s", name)
        child.terminate()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %ss; killing it", name, timeout)
            child.kill()
            child.wait()

    def _stop_workers(self) -> None:
        for name in ("worker-calls", "worker-lifecycle"):
            self._stop(name, timeout=30)

    def _watch(self) -> None:
        """Restart a part that died; one that keeps dying stops the fleet (exit code 1)."""
        while not self.stopping.wait(0.5):
            for name, child in list(self.children.items()):
                if child.poll() is None:
                    continue
                recent = [t for t in self.restarts.get(name, []) if t > time.monotonic() - 60]
                if len(recent) >= MAX_RESTARTS_PER_MINUTE:
                    log.error("%s keeps dying (code %s); stopping the fleet", name, child.returncode)
                    self.failed = True
                    self.stopping.set()
                    break
                log.error("%s exited with code %s; restarting it", name, child.returncode)
                self.restarts[name] = [*recent, time.monotonic()]
                self._spawn(name, self.argvs[name])

    def _dead_child(self) -> bool:
        for name, child in self.children.items():
            if child.poll() is not None:
                log.error("%s exited with code %s during start-up", name, child.returncode)
                self.failed = True
                self.stopping.set()
                return True
        return False

    def _on_signal(self, signum, _frame) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        self.stopping.set()

    # -- redis -------------------------------------------------------------------------------

    def _start_private_redis(self, workdir: Path) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise click.ClickException(
                "REDIS_ENABLED is false, so the fleet runs its own Redis, but redis-server is not "
                "installed (apt-get install redis-server), or set REDIS_ENABLED=true")
        sock = workdir / "redis.sock"
        self._spawn("redis", [server, "--port", "0", "--unixsocket", str(sock),
                              "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                              "--dir", str(workdir), "--loglevel", "warning"])
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline or self.children["redis"].poll() is not None:
                raise click.ClickException("the private redis-server did not start")
            time.sleep(0.02)
        return f"unix://{sock}"

    def _check_redis(self) -> None:
        try:
            redis.Redis.from_url(self.settings.redis_url).ping()
        except redis.RedisError as e:
            raise click.ClickException(f"cannot reach Redis at {self.settings.redis_url}: {e}") from e

    # -- readiness and cleanup ---------------------------------------------------------------

    def _announce_when_ready(self) -> None:
        import urllib.request

        url = f"http://{_connect_host(self.settings.HOST)}:{self.settings.PORT}/health"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopping.is_set() and not self._dead_child():
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        log.info("sandbox-fleet ready on http://%s:%s (host %s, backend %s)",
                                 self.settings.HOST, self.settings.PORT,
                                 self.settings.FLEET_HOST_NAME, self.settings.CONTAINER_DEPLOYMENT)
                        return
            except OSError:
                pass
            time.sleep(0.1)

    def _cleanup(self) -> None:
        """AUTO_CLEANUP: release this host's sandboxes while its workers still run."""
        if not self.settings.AUTO_CLEANUP:
            return
        fleet = Fleet.connect(self.settings)
        host = self.settings.FLEET_HOST_NAME
        worker = self.children.get("worker-lifecycle")
        log.info("AUTO_CLEANUP: releasing the sandboxes of host %s", host)
        left = fleet.drain(host, CLEANUP_WAIT, lambda: worker is not None and worker.poll() is None)
        if left:
            log.warning("AUTO_CLEANUP: %d sandboxes not torn down in time; the next start's "
                        "reconcile removes them", left)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _absolute(extension: str) -> str:
    """A file path is made absolute so the processes started elsewhere find it too."""
    return os.path.abspath(extension) if os.path.exists(extension) else extension


if __name__ == "__main__":
    main()
