"""The Celery configuration both sides share: broker, serialisation, reliability defaults."""

from __future__ import annotations

from celery import Celery

from . import jobs
from .settings import Settings

#: Redis redelivers an unacknowledged job (a create or teardown whose worker died) after this many
#: seconds; every acks_late job's time limit stays below it.
VISIBILITY_TIMEOUT = 180


def make_celery(settings: Settings, name: str = "sandbox_fleet") -> Celery:
    app = Celery(name)
    configure(app, settings)
    return app


def broker_url(redis_url: str) -> str:
    """kombu names a Redis unix socket ``redis+socket://``; redis-py names it ``unix://``."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://"):]
    return redis_url


def configure(app: Celery, settings: Settings) -> None:
    app.conf.update(
        broker_url=broker_url(settings.redis_url),
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_pool_limit=64,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=jobs.CREATE_QUEUE,
        task_routes=(jobs.celery_route,),
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.FLEET_WORKER_CONCURRENCY,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
