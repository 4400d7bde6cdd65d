#!/usr/bin/env python3
"""The entrypoint of sandbox-fleet's service image: one image, one role per container (Redash's
pattern). Settings come from the environment (and ./.env), as everywhere in sandbox-fleet.

  sandbox-fleet api                    gunicorn with WORKERS processes on HOST:PORT
  sandbox-fleet worker [ROLE] [ARGS]   a Celery worker of host FLEET_HOST_NAME; ROLE is
                                       lifecycle (creates and teardowns), calls (tool calls) or
                                       all (both, for a small host; the default)
  sandbox-fleet beat                   Celery beat (pool refill, heartbeat reaper)
  sandbox-fleet flower [ARGS]          Flower on 0.0.0.0:5555
  sandbox-fleet redis [ARGS]           redis-server on 0.0.0.0:6379, data in /data (a password:
                                       REDIS_PASSWORD); `redis-ping` is its health check
  sandbox-fleet admin ...              the admin CLI (`sandbox-fleet-admin`: hosts, list, drain...)
  sandbox-fleet drain                  release this host's sandboxes and wait for their teardown
  sandbox-fleet COMMAND...             anything else runs as is (e.g. `celery -A sandbox_workers ...`)

A worker that consumes lifecycle jobs, on SIGTERM with AUTO_CLEANUP=true (the default), first
drains its host (as runtime-sandbox-server does), then stops: `docker compose down` leaves no
sandbox behind. Give its container a stop grace period longer than that (DRAIN_TIMEOUT, 60 s).

The command lines come from sandbox_cli.commands (as runtime-sandbox-server's), and every value
from the settings (sandbox_core.settings): LOG_LEVEL, REDIS_PASSWORD... nothing here reads the
environment itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading

log = logging.getLogger("sandbox-fleet")

DRAIN_TIMEOUT = 60.0


def main(argv: list[str]) -> int:
    role, args = (argv[0], argv[1:]) if argv else ("api", [])
    if role == "api":
        return api(args)
    if role == "worker":
        kind = args[0] if args and not args[0].startswith("-") else "all"
        return worker(kind, args[1:] if args and args[0] == kind else args)
    if role == "beat":
        from sandbox_cli import commands

        return _exec(commands.beat("/tmp/celerybeat-schedule", *args))
    if role == "flower":
        from sandbox_cli import commands

        return _exec(commands.celery("flower", "--address=0.0.0.0", "--port=5555", *args))
    if role == "redis":
        os.makedirs("/data", exist_ok=True)
        password = _settings().REDIS_PASSWORD
        auth = ["--requirepass", password] if password else ["--protected-mode", "no"]
        return _exec(["redis-server", "--bind", "0.0.0.0", "--port", "6379", *auth,
                      "--dir", "/data", "--appendonly", "yes", *args])
    if role == "redis-ping":
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2,
                             password=_settings().REDIS_PASSWORD)
        return 0 if client.ping() else 1
    if role == "admin":
        from sandbox_cli.admin import cli

        return cli.main(args, prog_name="sandbox-fleet admin")
    if role == "drain":
        settings = _settings()
        left = drain(settings, settings.FLEET_HOST_NAME)
        return 1 if left else 0
    return _exec([role, *args])


def api(args: list[str]) -> int:
    from sandbox_cli import commands

    return _exec(commands.gunicorn(_settings(), None, *args))


def worker(kind: str, args: list[str]) -> int:
    from sandbox_cli import commands

    s = _settings()
    host = s.FLEET_HOST_NAME
    if kind not in commands.ROLES:
        print(f"sandbox-fleet worker: unknown role {kind!r}; expected "
              f"{', '.join(commands.ROLES)}", file=sys.stderr)
        return 2
    _use_host_iptables()
    argv = commands.worker(s, kind, *args)
    if kind == "calls" or not s.AUTO_CLEANUP:
        return _exec(argv)
    return supervise(argv, lambda alive: drain(s, host, alive))


def supervise(argv: list[str], before_stop) -> int:
    """Run the worker as a child (that dies with this process); on SIGTERM/SIGINT run
    ``before_stop`` while it still works."""
    from sandbox_cli import orphans

    child = subprocess.Popen(orphans.wrap(argv))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    while child.poll() is None and not stopping.wait(0.5):
        pass
    if child.poll() is None:
        before_stop(lambda: child.poll() is None)
        child.terminate()
    return child.wait()


def drain(settings, host: str, alive=lambda: True) -> int:
    """Release every sandbox of ``host`` and wait for the teardowns. Returns how many are left."""
    from sandbox_core import logs
    from sandbox_core.fleet import Fleet

    logs.setup(settings, role="drain")
    left = Fleet.connect(settings).drain(host, DRAIN_TIMEOUT, alive)
    log.info("drained host %s; %d sandboxes left for the next reconcile", host, left)
    return left


def _use_host_iptables() -> None:
    """The workers add one iptables rule on the host (host networking, NET_ADMIN). Use the
    iptables flavour (nft or legacy) that the host's Docker uses, so the rule sits with its own."""
    if not (shutil.which("iptables-legacy") and shutil.which("update-alternatives")):
        return

    def has_docker_chains(command: str) -> bool:
        done = subprocess.run([command, "-S"], capture_output=True, text=True)
        return done.returncode == 0 and "DOCKER" in done.stdout

    if not has_docker_chains("iptables-nft") and has_docker_chains("iptables-legacy"):
        subprocess.run(["update-alternatives", "--set", "iptables", "/usr/sbin/iptables-legacy"],
                       capture_output=True)


def _settings():
    from sandbox_core.errors import SettingsError
    from sandbox_core.settings import load_settings

    try:
        return load_settings()
    except SettingsError as e:
        sys.exit(f"sandbox-fleet: {e}")


def _exec(argv: list[str]) -> int:
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
