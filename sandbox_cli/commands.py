"""The command lines of the fleet's processes, built in one place.

``runtime-sandbox-server``, the service image's entrypoint (deploy/entrypoint.py) and the test
harness (tests/localfleet.py) all start gunicorn, Celery workers and beat from here, so a
queue name, a thread count or a flag is changed once.
"""

from __future__ import annotations

import sys

from sandbox_core import jobs
from sandbox_core.settings import Settings

#: gthread threads per API process: each waits on Redis for a job's reply, not on the CPU.
GUNICORN_THREADS = 64
#: Seconds gunicorn gives requests in flight when it is stopped, before it cuts them.
API_GRACE = 3
#: The gunicorn config module: the fleet's logging, and workers that die with their master.
GUNICORN_CONFIG = "python:sandbox_cli.gunicorn_conf"

#: A worker's roles: which of its host's queues it consumes.
ROLES = ("lifecycle", "calls", "all")


def queues(role: str, host: str) -> list[str]:
    """lifecycle: creates (shared queue) and this host's teardowns; calls: its tool calls."""
    if role == "lifecycle":
        return [jobs.CREATE_QUEUE, jobs.host_queue(host)]
    if role == "calls":
        return [jobs.call_queue(host)]
    if role == "all":
        return [jobs.CREATE_QUEUE, jobs.host_queue(host), jobs.call_queue(host)]
    raise ValueError(f"unknown worker role {role!r}; expected one of {', '.join(ROLES)}")


def celery(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "sandbox_workers", command, *args]


def worker(settings: Settings, role: str, *extra: str) -> list[str]:
    """A Celery worker of this host (FLEET_HOST_NAME) for one role. Logging is set up from the
    settings (sandbox_core.logs), so no --loglevel is passed."""
    host = settings.FLEET_HOST_NAME
    concurrency = settings.FLEET_CALL_CONCURRENCY if role == "calls" else settings.FLEET_WORKER_CONCURRENCY
    return celery("worker", "-Q", ",".join(queues(role, host)), "-n", f"{role}@{host}",
                  "--concurrency", str(concurrency),
                  "--without-gossip", "--without-mingle", "--without-heartbeat", *extra)


def beat(schedule_file: str, *extra: str) -> list[str]:
    return celery("beat", "-s", schedule_file, *extra)


def gunicorn(settings: Settings, bind: str | None = None, *extra: str) -> list[str]:
    """The API: WORKERS gthread processes. ``bind`` defaults to HOST:PORT; runtime-sandbox-server
    passes ``fd://N``, a socket it bound itself."""
    return [sys.executable, "-m", "gunicorn", "sandbox_api.wsgi:app",
            "--config", GUNICORN_CONFIG,
            "--bind", bind or f"{settings.HOST}:{settings.PORT}",
            "--workers", str(settings.WORKERS), "--worker-class", "gthread",
            "--threads", str(GUNICORN_THREADS), "--timeout", "0",
            "--graceful-timeout", str(API_GRACE), *extra]


def redis_server(socket_path: str, folder: str) -> list[str]:
    """A private redis-server on a unix socket only (no TCP port), keeping nothing on disk."""
    import shutil

    server = shutil.which("redis-server")
    if server is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    return [server, "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", folder, "--loglevel", "warning"]
