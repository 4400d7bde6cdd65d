"""The workers' Celery app: ``celery -A sandbox_workers worker`` / ``celery -A sandbox_workers beat``.

Configured lazily from the one Settings object when Celery first reads its config, so importing
this module connects to nothing. A worker consumes the shared create queue and its own host's
queues; ``-Q`` narrows that (runtime-sandbox-server runs one worker for lifecycle jobs and one for
tool calls, so long calls never hold up creates and releases).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery, bootsteps
from kombu import Queue

from sandbox_core import jobs
from sandbox_core.celery_app import configure

from .context import current, worker_settings

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
    """Before consuming: connect to Redis and the backend, and reconcile this host."""

    requires = {"celery.worker.components:Pool"}

    def start(self, worker) -> None:
        from .reconcile import reconcile

        ctx = current()  # connects now, so the first job pays no start-up cost
        consumed = set(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        if jobs.host_queue(ctx.host) in consumed:
            result = reconcile(ctx)
            log.info("host %s ready (backend %s); reconcile: %s", ctx.host, ctx.backend.name, result)

    def stop(self, worker) -> None:
        current().agent.close()


app.steps["worker"].add(HostStartup)
