"""How the API hands work to the workers: queue names, job names, and the reply channel.

Jobs travel as Celery tasks over Redis. Their results do not use Celery's result backend: the API
marks that it waits (``waiting:<job>``, with the job's timeout as TTL) and blocks on ``BLPOP
reply:<job>``; the worker hands the result over atomically only if the waiter is still there. So
a reply is pushed, never polled, it is thread-safe under gunicorn's threads, and a create whose
caller gave up is noticed by the worker, which then releases the sandbox instead of leaking it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from celery import Celery

from .errors import SandboxError, Unavailable
from .store import Store

#: Seconds of waiting for a reply between two looks at the health of the worker running the job.
WATCH_SLICE = 3

#: The shared queue every worker host consumes: creates go to whichever host has a free thread.
CREATE_QUEUE = "sandbox.create"

# Job names (the tasks live in sandbox_workers.tasks; the API only sends them by name).
CREATE = "sandbox.create"
TEARDOWN = "sandbox.teardown"
AGENT = "sandbox.agent"
CONTROL = "sandbox.control"
REFILL = "fleet.refill_pools"
REAP = "fleet.reap_idle"


def host_queue(host: str) -> str:
    """Lifecycle jobs of one host's sandboxes: teardown, start/stop, restores, reconcile."""
    return f"host.{host}"


def call_queue(host: str) -> str:
    """Tool calls into one host's sandboxes, kept apart so long calls never block lifecycle jobs."""
    return f"host.{host}.calls"


class JobClient:
    """Sends jobs and waits for their replies (used by the API and the server command)."""

    def __init__(self, celery: Celery, store: Store) -> None:
        self.celery = celery
        self.store = store

    def run(self, name: str, kwargs: dict, queue: str, timeout: float) -> Any:
        """Send a job and block until its reply, or raise Unavailable after ``timeout`` seconds."""
        job_id = uuid.uuid4().hex
        waiting = self.store.waiting_key(job_id)
        self.store.redis.set(waiting, "1", ex=max(1, int(timeout) + 5))
        self.celery.send_task(name, kwargs=kwargs, queue=queue, task_id=job_id, expires=timeout,
                              argsrepr="()", kwargsrepr=_describe(kwargs))
        popped = self._wait(name, job_id, queue, timeout)
        if popped is None:
            if self.store.redis.delete(waiting):
                raise Unavailable(f"no worker answered {name} on queue {queue} within {timeout:g}s")
            # The reply landed between the timeout and our delete: take it.
            popped = self.store.redis.blpop(self.store.reply_key(job_id), timeout=5)
            if popped is None:
                raise Unavailable(f"{name} reply was lost")
        return decode_reply(popped[1])

    def _wait(self, name: str, job_id: str, queue: str, timeout: float):
        """BLPOP the reply. Past the first slice, also watch the worker running the job: if it
        dies, say so now rather than at the timeout (a lifecycle job is then redelivered)."""
        reply_key = self.store.reply_key(job_id)
        deadline = time.monotonic() + timeout
        runner = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            popped = self.store.redis.blpop(reply_key, timeout=min(left, WATCH_SLICE))
            if popped is not None:
                return popped
            runner = self.store.worker_of(job_id) or runner
            if runner and not self.store.worker_alive(runner):
                self.store.redis.delete(self.store.waiting_key(job_id))
                raise Unavailable(f"worker {runner} died while running {name}; "
                                  "a create or release is retried by another worker")

    def send(self, name: str, kwargs: dict, queue: str, countdown: float | None = None) -> None:
        """Send a job nobody waits for (teardowns, refills)."""
        self.celery.send_task(name, kwargs=kwargs, queue=queue, countdown=countdown,
                              argsrepr="()", kwargsrepr=_describe(kwargs))


def _describe(kwargs: dict) -> str:
    """What monitoring (events, Flower, logs) shows of a job: which sandbox and operation, never
    the tool's arguments (user code and data). Also spares Celery a saferepr of every message."""
    return repr({k: kwargs[k] for k in ("name", "op") if k in kwargs})


def encode_reply(result: Any = None, error: SandboxError | None = None) -> str:
    if error is not None:
        return json.dumps({"error": error.to_dict()})
    return json.dumps({"result": result})


def decode_reply(body: str) -> Any:
    data = json.loads(body)
    if "error" in data:
        raise SandboxError.from_dict(data["error"])
    return data["result"]
