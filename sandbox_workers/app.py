"""The workers' Celery app: ``celery -A sandbox_workers worker`` / ``celery -A sandbox_workers beat``.

Configured lazily from the one Settings object when Celery first reads its config, so importing
this module connects to nothing. A worker consumes the shared create queue and its own host's
queues; ``-Q`` narrows that (runtime-sandbox-server runs one worker for lifecycle jobs and one for
tool calls, so long calls never hold up creates and releases).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import timedelta

from celery import Celery, bootsteps
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_postrun,
    task_received,
    task_revoked,
    worker_shutdown,
)
from kombu import Queue

from sandbox_core import jobs, logs
from sandbox_core.celery_app import configure

from . import liveness, rebuild
from .context import current, worker_settings
from .lifecycle import warn_if_ports_shared
from .liveness import Heartbeat
from .reconcile import adopt, reconcile

log = logging.getLogger(__name__)

app = Celery("sandbox_workers", include=["sandbox_workers.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **_: object) -> None:
    settings = worker_settings()
    configure(sender, settings)
    host = settings.FLEET_HOST_NAME
    sender.conf.task_queues = [Queue(jobs.CREATE_QUEUE), Queue(jobs.host_queue(host)),
                               Queue(jobs.call_queue(host))]
    schedule = {}
    if settings.WATCHER_SCAN_INTERVAL > 0:
        schedule["refill-pools"] = {
            "task": jobs.REFILL, "schedule": timedelta(seconds=settings.WATCHER_SCAN_INTERVAL),
            "options": {"expires": 30}}
    if settings.WATCHER_SCAN_INTERVAL > 0 and settings.reaper_interval > 0:
        schedule["reap-idle"] = {
            "task": jobs.REAP, "schedule": timedelta(seconds=settings.reaper_interval),
            "options": {"expires": 30}}
    sender.conf.beat_schedule = schedule


@setup_logging.connect
def _setup_logging(**_: object) -> None:
    """The fleet's logging (sandbox_core.logs) instead of Celery's: LOG_LEVEL and LOG_FORMAT, and
    each job's "received"/"succeeded" line and each beat tick below INFO."""
    logs.setup(worker_settings(), role=_role(sys.argv))


def _role(argv: list[str]) -> str:
    """``beat``, or a worker's node name before the @ (``lifecycle``, ``calls``...)."""
    if "beat" in argv:
        return "beat"
    for i, arg in enumerate(argv):
        node = argv[i + 1] if arg in ("-n", "--hostname") and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--hostname=") else "")
        if node:
            return f"worker-{node.split('@')[0]}"
    return "worker"


#: The lifecycle worker's niceness: its share of a busy host's CPU next to the call path's.
LIFECYCLE_NICE = 10


def _queues(options: dict) -> list[str]:
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    return [q.strip() for q in queues]


@celeryd_init.connect
def _calls_only_worker_skips_ack_emulation(conf, options, **_: object) -> None:
    """A worker that consumes only tool-call queues does without kombu's unacked bookkeeping
    (a write before and a delete after every message): calls are never redelivered anyway, and the
    two Redis round trips are on every call's path. Lifecycle workers keep it, for redelivery."""
    queues = _queues(options)
    if queues and all(q.endswith(".calls") for q in queues):
        conf.broker_transport_options = {**conf.broker_transport_options, "ack_emulation": False}


@celeryd_init.connect
def _lifecycle_worker_yields_the_cpu(options, **_: object) -> None:
    """A worker that consumes no tool-call queue runs niced: starting and removing containers
    (and the mkfs, mount and iptables they run) can wait a little, a tool call should not. The
    nice value does not reach the containers themselves: Docker starts those."""
    queues = _queues(options)
    if queues and not any(q.endswith(".calls") for q in queues):
        os.nice(LIFECYCLE_NICE)


@task_received.connect
def _held(request, **_: object) -> None:
    """The job is this process's from now on (liveness.py); a create is reported at once."""
    liveness.started(request.id, urgent=request.name == jobs.CREATE)


@task_postrun.connect
def _ran(task_id: str, **_: object) -> None:
    liveness.finished(task_id)


@task_revoked.connect
def _dropped(request, **_: object) -> None:
    liveness.finished(request.id)


class HostStartup(bootsteps.StartStopStep):
    """Before consuming: connect to Redis and the backend, beat liveness, and (in the worker that
    consumes the host's lifecycle queue) reconcile the host, then watch it:

    - every FLEET_RECONCILE_INTERVAL seconds, reconcile again;
    - every WATCH seconds, check the fleet's epoch: if Redis lost its state while we ran, adopt
      this host's running sandboxes instead of treating them as strays.
    """

    requires = {"celery.worker.components:Pool"}
    WATCH = 2.0

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()
        self.heartbeat: Heartbeat | None = None
        self.owns_host = False  # consumes the host's lifecycle queue: cleans the host up at stop

    def start(self, worker) -> None:
        ctx = current()  # connects now, so the first job pays no start-up cost
        liveness.NODE = f"{worker.hostname}:{os.getpid()}"  # a restarted worker is a new node
        self.heartbeat = Heartbeat(ctx.store, liveness.NODE)
        self.heartbeat.start()
        _started.append(self)
        consumed = set(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        if jobs.host_queue(ctx.host) not in consumed:
            return
        self.owns_host = True
        if ctx.backend.uses_host_port:
            warn_if_ports_shared(ctx.settings)
        ctx.store.stop_draining(ctx.host)  # a host started again serves creates again
        seen = rebuild.remembered_epoch(ctx.settings, ctx.host)
        if seen is not None and ctx.store.epoch() != seen:
            log.warning("host %s: the state store lost the fleet's records since this host's "
                        "worker last ran; adopting its sandboxes", ctx.host)
            adopt(ctx)
        epoch = self._open_epoch(ctx)
        log.info("host %s ready (backend %s); reconcile: %s", ctx.host, ctx.backend.name,
                 reconcile(ctx))
        threading.Thread(target=self._watch, args=(ctx, epoch), name="host-watch", daemon=True).start()

    def _watch(self, ctx, epoch: str) -> None:
        interval = ctx.settings.FLEET_RECONCILE_INTERVAL
        next_reconcile = time.monotonic() + interval
        while not self.stopping.wait(self.WATCH):
            try:
                if ctx.store.epoch() != epoch:
                    log.warning("host %s: the state store lost the fleet's records; adopting this "
                                "host's sandboxes", ctx.host)
                    adopt(ctx)
                    epoch = self._open_epoch(ctx)
                if interval and time.monotonic() >= next_reconcile:
                    reconcile(ctx)
                    next_reconcile = time.monotonic() + interval
            except Exception:  # Redis or Docker away for a moment: the next round tries again
                log.exception("host %s: reconcile failed", ctx.host)

    @staticmethod
    def _open_epoch(ctx) -> str:
        epoch = ctx.store.open_epoch()
        rebuild.remember_epoch(ctx.settings, ctx.host, epoch)
        return epoch

    def stop(self, worker) -> None:
        self.stopping.set()


#: The started step, closed by ``worker_shutdown``: bootsteps stop before the pool has finished
#: its jobs, and a heartbeat that signed off then would have their callers think them lost.
_started: list[HostStartup] = []


@worker_shutdown.connect
def _sign_off(**_: object) -> None:
    """After the last job finished: stop beating, clean the host up (the host's owner only: the
    other worker processes of the host may still run), close the agent and backend connections."""
    for step in _started:
        if step.heartbeat:
            step.heartbeat.stop()
    ctx = current()
    ctx.agent.close()
    if any(step.owns_host for step in _started):
        try:
            ctx.backend.cleanup_host()
        except Exception:  # a stop goes on; the next start's backend sets the host up again
            log.warning("host %s: cleaning up the host failed", ctx.host, exc_info=True)
    ctx.backend.close()


app.steps["worker"].add(HostStartup)
