"""``runtime-sandbox-server``: the whole fleet on this machine, with one command.

It binds the API's port first (a port in use fails the start at once), then starts:
  1. a private redis-server on a unix socket, when REDIS_ENABLED is false (upstream's default);
  2. a Celery worker for this host's lifecycle jobs (creates, teardowns) and one for tool calls;
  3. Celery beat (pool refill and the heartbeat reaper);
  4. the API under gunicorn, WORKERS processes, on the socket bound in the first step.
Every part dies with the server, even a server killed with SIGKILL (sandbox_cli.orphans). A part
that dies is restarted; one that keeps dying stops the fleet with its last lines and exit code 1.

On Ctrl-C or SIGTERM (in under STOP_BUDGET seconds when nothing hangs): the API (requests in
flight get API_GRACE seconds) and beat stop, this host's sandboxes are released if AUTO_CLEANUP
and their teardowns waited for, then the workers finish their jobs (warm shutdown), then Redis.
A worker still busy when the budget is spent is killed: its creates and teardowns are acknowledged
late, so Redis hands them back to a worker (docs/reliability.md), and reconcile removes leftovers.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import redis

from backends import backend_class
from sandbox_core import logs, polling
from sandbox_core.errors import SettingsError
from sandbox_core.fleet import Fleet
from sandbox_core.registry import load_extensions
from sandbox_core.settings import CONFIG_FILE_VAR, EXTENSIONS_VAR, Settings, load_settings

from . import commands, orphans

log = logging.getLogger("runtime-sandbox-server")

#: A SIGTERM stop aims to be done in this many seconds (docker stop and many supervisors give 10).
STOP_BUDGET = 9.0
#: Seconds a worker gets for its warm shutdown at least, budget or not.
WORKER_GRACE = 2.0
#: With AUTO_CLEANUP, the longest wait for this host's teardowns (only many sandboxes need it).
CLEANUP_WAIT = 60
MAX_RESTARTS_PER_MINUTE = 5
#: Lines of a part's output kept to say why it died.
LAST_LINES = 15
WORKERS = ("worker-calls", "worker-lifecycle")


class StartFailed(click.ClickException):
    """A start that cannot go on: printed as ``Error: ...``, exit code 1."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A .env-style settings file (overrides the environment). Default: ./.env")
@click.option("--extension", "extensions", multiple=True,
              help="A module or .py file registering custom sandbox types (repeatable).")
@click.option("--log-level", default=None,
              type=click.Choice(["debug", "info", "warning", "error", "critical"],
                                case_sensitive=False),
              help="Log level of every part (default: LOG_LEVEL, or debug with DEBUG=true).")
def main(config_file: str | None, extensions: tuple[str, ...], log_level: str | None) -> None:
    """Run the sandbox fleet on this machine: API, workers, beat (and Redis if needed)."""
    extensions = tuple(_absolute(e) for e in extensions)
    try:
        settings = load_settings(config_file)
        if log_level:
            settings = settings.replace(LOG_LEVEL=log_level.lower())
        logs.setup(settings, role="server")
        load_extensions(settings, extensions)
        # a backend that cannot run with these settings (or is missing a package) says so now
        backend_class(settings.CONTAINER_DEPLOYMENT).check_settings(settings)
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    Supervisor(settings, config_file, extensions, log_level).run()


class Part:
    """One child process: its command line, and the last lines it wrote (forwarded to stderr)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], pass_fds=()) -> None:
        self.name = name
        self.argv = argv
        self.last = collections.deque(maxlen=LAST_LINES)
        # Its own session: a Ctrl-C in the terminal reaches the server only, which stops the parts
        # in order. Started through sandbox_cli.orphans: it dies with the server.
        self.proc = subprocess.Popen(orphans.wrap(argv), env=env, start_new_session=True,
                                     pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.forwarder = threading.Thread(target=self._forward, name=f"out-{name}", daemon=True)
        self.forwarder.start()

    def _forward(self) -> None:
        out = sys.stderr.buffer
        for line in self.proc.stdout:
            self.last.append(line.decode(errors="replace").rstrip())
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)  # a no-op once it exited

    def last_error(self) -> str:
        if not self.alive():
            self.forwarder.join(2)  # until it read the dead part's last words
        lines = [line for line in self.last if line.strip()]
        return "\n".join(lines[-LAST_LINES:]) or "(it wrote nothing)"


class Supervisor:
    def __init__(self, settings: Settings, config_file: str | None, extensions: tuple[str, ...],
                 log_level: str | None = None) -> None:
        self.settings = settings
        self.env = dict(os.environ)
        if config_file:
            self.env[CONFIG_FILE_VAR] = os.path.abspath(config_file)
        if extensions:
            self.env[EXTENSIONS_VAR] = os.pathsep.join(extensions)
        if log_level:
            self.env["LOG_LEVEL"] = log_level.lower()
        self.stopping = threading.Event()
        self.stop_started = 0.0
        self.failed: str | None = None
        self.parts: dict[str, Part] = {}
        self.fds: dict[str, tuple[int, ...]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.listener: socket.socket | None = None

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        workdir = Path(tempfile.mkdtemp(prefix="sandbox-fleet-"))
        try:
            self.listener = bind_api(self.settings)
            self._start(workdir)
            if not self.stopping.is_set():
                self._announce_when_ready()
            self._watch()
        except StartFailed as e:
            self.failed = e.message
        finally:
            self._shutdown()
            shutil.rmtree(workdir, ignore_errors=True)
        if self.failed:
            log.error("%s", self.failed)
            sys.exit(1)
        log.info("stopped in %.1fs", time.monotonic() - self.stop_started)

    def _start(self, workdir: Path) -> None:
        if not self.settings.REDIS_ENABLED and not self.settings.REDIS_URL:
            url = self._start_private_redis(workdir)
            self.settings = self.settings.replace(REDIS_URL=url)
            self.env["REDIS_URL"] = url
        self._check_redis()
        self._spawn("worker-lifecycle", commands.worker(self.settings, "lifecycle"))
        self._spawn("worker-calls", commands.worker(self.settings, "calls"))
        self._spawn("beat", commands.beat(str(workdir / "beat-schedule")))
        fd = self.listener.fileno()
        self._spawn("api", commands.gunicorn(self.settings, f"fd://{fd}"), pass_fds=(fd,))

    # -- children ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        log.info("starting %s", name)
        self.fds[name] = pass_fds
        self.parts[name] = Part(name, argv, self.env, pass_fds)

    def _watch(self) -> None:
        """Restart a part that died; one that keeps dying stops the fleet (exit code 1)."""
        while not self.stopping.wait(0.5):
            for name, part in list(self.parts.items()):
                if part.alive():
                    continue
                part.proc.wait()
                recent = [t for t in self.restarts.get(name, []) if t > time.monotonic() - 60]
                if len(recent) >= MAX_RESTARTS_PER_MINUTE:
                    self.failed = (f"{name} keeps dying (exit code {part.proc.returncode}, "
                                   f"{len(recent) + 1} times in a minute); stopping the fleet. "
                                   f"Its last lines:\n{part.last_error()}")
                    self.stopping.set()
                    break
                log.error("%s exited with code %s; restarting it", name, part.proc.returncode)
                self.restarts[name] = [*recent, time.monotonic()]
                self._spawn(name, part.argv, self.fds[name])

    def _dead_part(self) -> Part | None:
        return next((p for p in self.parts.values() if not p.alive()), None)

    def _on_signal(self, signum, _frame) -> None:
        if not self.stopping.is_set():
            log.info("received %s; shutting down", signal.Signals(signum).name)
        self.stopping.set()

    # -- stopping ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """API and beat, cleanup, workers, Redis; each group stopped in parallel, bounded."""
        self.stopping.set()
        self.stop_started = time.monotonic()
        deadline = self.stop_started + STOP_BUDGET
        self._stop(["api", "beat"], time.monotonic() + commands.API_GRACE + 1)
        if self.listener is not None:
            self.listener.close()
        self._cleanup(deadline - WORKER_GRACE)
        self._stop(list(WORKERS), max(deadline, time.monotonic() + WORKER_GRACE))
        self._stop(["redis"], time.monotonic() + 3)

    def _stop(self, names: list[str], until: float) -> None:
        """SIGTERM the parts (a Celery worker's warm shutdown: its running jobs finish), wait until
        ``until``, then SIGKILL. Not Celery's cold shutdown (SIGQUIT): with the thread pool it
        cannot cancel a job (the pool has no kill_job) and hands nothing back either."""
        parts = [self.parts.pop(n) for n in names if n in self.parts]
        for part in parts:
            if part.alive():
                log.info("stopping %s", part.name)
            part.signal(signal.SIGTERM)
        for part in _wait_all(parts, until):
            log.warning("%s did not stop in time; killing it (a create or teardown it ran is "
                        "redelivered, a tool call is lost)", part.name)
            part.signal(signal.SIGKILL)
            part.proc.wait()

    def _cleanup(self, until: float) -> None:
        """AUTO_CLEANUP: release this host's sandboxes while its workers still run."""
        worker = self.parts.get("worker-lifecycle")
        if not self.settings.AUTO_CLEANUP or worker is None or not worker.alive():
            return
        host = self.settings.FLEET_HOST_NAME
        log.info("AUTO_CLEANUP: releasing the sandboxes of host %s", host)
        wait = min(CLEANUP_WAIT, max(1.0, until - time.monotonic()))
        try:
            left = Fleet.connect(self.settings).drain(host, wait, worker.alive)
        except redis.RedisError as e:
            log.warning("AUTO_CLEANUP: the state store is unreachable (%s); the next start's "
                        "reconcile removes this host's sandboxes", e)
            return
        if left:
            log.warning("AUTO_CLEANUP: %d sandboxes not torn down in %.0fs; the next start's "
                        "reconcile removes them", left, wait)

    # -- redis -------------------------------------------------------------------------------

    def _start_private_redis(self, workdir: Path) -> str:
        sock = workdir / "redis.sock"
        if sock.exists():
            raise StartFailed(f"the private Redis socket {sock} is taken")
        try:
            argv = commands.redis_server(str(sock), str(workdir))
        except FileNotFoundError as e:
            raise StartFailed(f"REDIS_ENABLED is false, so the fleet runs its own Redis, but {e}; "
                              "or set REDIS_ENABLED=true") from None
        self._spawn("redis", argv)
        part = self.parts["redis"]

        def up() -> bool:
            if not part.alive():
                part.proc.wait()
                raise StartFailed(f"the private redis-server exited with code "
                                  f"{part.proc.returncode}:\n{part.last_error()}")
            return _answers(sock)

        if not polling.poll(up, 10, first=0.02, most=0.05):
            raise StartFailed(f"the private redis-server did not open {sock} in 10s")
        return f"unix://{sock}"

    def _check_redis(self) -> None:
        try:
            redis.Redis.from_url(self.settings.redis_url, socket_timeout=5).ping()
        except redis.RedisError as e:
            raise StartFailed(f"cannot reach Redis at {self.settings.redis_url}: {e}") from e

    # -- readiness ---------------------------------------------------------------------------

    def _announce_when_ready(self) -> None:
        url = f"http://{_connect_host(self.settings.HOST)}:{self.settings.PORT}/health"

        def ready() -> bool:
            dead = self._dead_part()
            if dead is not None:
                dead.proc.wait()
                raise StartFailed(f"{dead.name} exited with code {dead.proc.returncode} during "
                                  f"start-up. Its last lines:\n{dead.last_error()}")
            return self.stopping.is_set() or polling.http_ok(url, timeout=1)

        if polling.poll(ready, 60, first=0.05, most=0.1) and not self.stopping.is_set():
            log.info("sandbox-fleet ready on http://%s:%s (host %s, backend %s)",
                     self.settings.HOST, self.settings.PORT,
                     self.settings.FLEET_HOST_NAME, self.settings.CONTAINER_DEPLOYMENT)
        elif not self.stopping.is_set():
            log.warning("the API did not answer /health within 60s; still trying")


def bind_api(settings: Settings) -> socket.socket:
    """The API's listening socket, bound here so a port in use fails the start before anything
    runs (and a restarted gunicorn finds it open). Handed to gunicorn as ``fd://N``."""
    host = settings.HOST or "0.0.0.0"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, settings.PORT, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise StartFailed(f"HOST={host}: {e}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise StartFailed(f"cannot listen on {host}:{settings.PORT} (HOST, PORT): {e.strerror}; "
                          "is another runtime-sandbox-server running?") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _wait_all(parts: list[Part], until: float) -> list[Part]:
    """Wait until every part exited or ``until``; the ones still running."""
    while time.monotonic() < until and any(p.alive() for p in parts):
        time.sleep(0.05)
    return [p for p in parts if p.alive()]


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _absolute(extension: str) -> str:
    """A file path is made absolute so the processes started elsewhere find it too."""
    return os.path.abspath(extension) if os.path.exists(extension) else extension


if __name__ == "__main__":
    main()
