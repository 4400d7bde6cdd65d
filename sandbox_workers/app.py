"""The workers' Celery app: ``celery -A sandbox_workers worker`` / ``celery -A sandbox_workers beat``.

Configured lazily from the one Settings object when Celery first reads its config, so importing
this module connects to nothing. A worker consumes the shared create queue and its own host's
queues; ``-Q`` narrows that (runtime-sandbox-server runs one worker for lifecycle jobs and one for
tool calls, so long calls never hold up creates and releases).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery, bootsteps
from kombu import Queue

from sandbox_core import jobs
from sandbox_core.celery_app import configure

from .context import current, worker_settings
from .reconcile import reconcile

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
            "options": {"queue": jobs.CREATE_QUEUE, "expires": 30}}
    if settings.WATCHER_SCAN_INTERVAL > 0 and settings.reaper_interval > 0:
        schedule["reap-idle"] = {
            "task": jobs.REAP, "schedule": timedelta(seconds=settings.reaper_interval),
            "options": {"queue": jobs.CREATE_QUEUE, "expires": 30}}
    sender.conf.beat_schedule = schedule


class HostStartup(bootsteps.StartStopStep):
    """Before consuming: connect to Redis and the backend, and reconcile this host, then again
    every FLEET_RECONCILE_INTERVAL seconds (in the worker that consumes the host's lifecycle queue)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs) -> None:
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()

    def start(self, worker) -> None:
        ctx = current()  # connects now, so the first job pays no start-up cost
        consumed = set(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        if jobs.host_queue(ctx.host) not in consumed:
            return
        log.info("host %s ready (backend %s); reconcile: %s", ctx.host, ctx.backend.name,
                 reconcile(ctx))
        interval = ctx.settings.FLEET_RECONCILE_INTERVAL
        if interval:
            threading.Thread(target=self._every, args=(ctx, interval), name="reconcile",
                             daemon=True).start()

    def _every(self, ctx, interval: int) -> None:
        while not self.stopping.wait(interval):
            try:
                reconcile(ctx)
            except Exception:  # the next round tries again; a worker must not die of it
                log.exception("reconcile of host %s failed", ctx.host)

    def stop(self, worker) -> None:
        self.stopping.set()
        current().agent.close()


app.steps["worker"].add(HostStartup)
