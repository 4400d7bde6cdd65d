"""What one worker process holds for its whole life: settings, store, backend, connections.

Built once, on first use, never at import: importing the package opens nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

from backends import Backend, create_backend
from sandbox_core.celery_app import make_celery
from sandbox_core.jobs import JobClient
from sandbox_core.registry import load_extensions
from sandbox_core.settings import Settings, extensions_from_env, load_settings
from sandbox_core.store import Store

from .agent_client import AgentClient
from .storage import Storage, make_storage

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    store: Store
    backend: Backend
    agent: AgentClient
    job_client: JobClient
    storage: Storage | None
    #: Creates of this process between starting a container and its agent answering
    #: (FLEET_CREATES_IN_FLIGHT): a burst queues here instead of starting every container at once.
    creates: threading.BoundedSemaphore

    @property
    def host(self) -> str:
        return self.settings.FLEET_HOST_NAME


@functools.lru_cache(maxsize=1)
def worker_settings() -> Settings:
    settings = load_settings()
    load_extensions(settings, extensions_from_env())
    return settings


@functools.lru_cache(maxsize=1)
def current() -> WorkerContext:
    settings = worker_settings()
    store = Store.connect(settings)
    return WorkerContext(
        settings=settings,
        store=store,
        backend=create_backend(settings),
        agent=AgentClient(max_reply=settings.FLEET_MAX_AGENT_REPLY_MB * 1024 * 1024),
        job_client=JobClient(make_celery(settings, "sandbox_workers.client"), store),
        storage=make_storage(settings),
        creates=threading.BoundedSemaphore(settings.creates_in_flight),
    )
