"""How the API hands work to the workers: queue names, job names, and the reply channel.

Jobs travel as Celery tasks over Redis. Their results do not use Celery's result backend: the API
marks that it waits (``waiting:<job>``, with the job's timeout as TTL) and blocks on ``BLPOP
reply:<job>``; the worker hands the result over atomically only if the waiter is still there. So
a reply is pushed, never polled, it is thread-safe under gunicorn's threads, and a create whose
caller gave up is noticed by the worker, which then releases the sandbox instead of leaking it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import Celery

from .errors import SandboxError, Unavailable
from .store import Store

log = logging.getLogger(__name__)

#: Seconds of one blocking read of a reply; between two, the health of the worker running the
#: job is looked at.
WATCH_SLICE = 1
#: How often one job is sent again because the worker running it died.
MAX_RESENDS = 3

#: The shared queue every worker host consumes: creates go to whichever host has a free thread.
CREATE_QUEUE = "sandbox.create"

# Job names (the tasks live in sandbox_workers.tasks; the API only sends them by name).
CREATE = "sandbox.create"
TEARDOWN = "sandbox.teardown"
AGENT = "sandbox.agent"
CONTROL = "sandbox.control"
REFILL = "fleet.refill_pools"
REAP = "fleet.reap_idle"


#: Jobs that any host may run: they go to the shared queue unless a host is named.
_SHARED = (CREATE, REFILL, REAP)


def host_queue(host: str) -> str:
    """Lifecycle jobs of one host's sandboxes: teardown, start/stop, restores, reconcile."""
    return f"host.{host}"


def call_queue(host: str) -> str:
    """Tool calls into one host's sandboxes, kept apart so long calls never block lifecycle jobs."""
    return f"host.{host}.calls"


def queue_for(name: str, host: str | None = None) -> str:
    """The routing table: the queue a job goes to, given the host of the sandbox it is about.

    A create with no host goes to the shared queue (whichever host has a free thread takes it);
    one with a host is a restore, which runs where the workspace is. Tool calls go to the host's
    call queue; teardowns and start/stop/pause to its lifecycle queue; beat's jobs to the shared
    queue."""
    if name in _SHARED and host is None:
        return CREATE_QUEUE
    if host is None:
        raise ValueError(f"job {name} goes to the host of its sandbox; none given")
    if name == AGENT:
        return call_queue(host)
    if name in (CREATE, TEARDOWN, CONTROL):
        return host_queue(host)
    raise ValueError(f"no route for job {name}")


def celery_route(name: str, args, kwargs, options, task=None, **_: object) -> dict | None:
    """queue_for as Celery's router (task_routes), for jobs sent without a queue (beat's). The
    fleet's own sends name their queue through queue_for, which this leaves as it is."""
    return {"queue": queue_for(name)} if name in _SHARED else None


class WorkerLost(Exception):
    """The worker process running a job stopped beating."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class JobClient:
    """Sends jobs and waits for their replies (used by the API and the server command)."""

    def __init__(self, celery: Celery, store: Store) -> None:
        self.celery = celery
        self.store = store

    def run(self, name: str, kwargs: dict, timeout: float, *, host: str | None = None,
            job_id: str | None = None, resend_if_lost: bool = False, awaited: bool = False) -> Any:
        """Send a job (to the queue ``queue_for`` names) and block until its reply, or raise
        Unavailable after ``timeout`` seconds. ``awaited``: the caller registered its wait for
        ``job_id``'s reply already (``Store.find``'s ``expect_reply``).

        With ``resend_if_lost`` (idempotent jobs: creates), a job whose worker dies is sent again,
        under the same id, for a live worker to take over; otherwise the caller is told at once.
        """
        queue = queue_for(name, host)
        job_id = job_id or uuid.uuid4().hex
        if not awaited:
            self.store.expect_reply(job_id, timeout + 5)
        deadline = time.monotonic() + timeout
        self.send(name, kwargs, host=host, job_id=job_id, expires=timeout)
        popped = None
        for _ in range(MAX_RESENDS + 1):
            try:
                popped = self._wait(name, job_id, deadline)
                break
            except WorkerLost as lost:
                left = deadline - time.monotonic()
                if not resend_if_lost or left <= 1:
                    self.store.stop_waiting(job_id)
                    raise Unavailable(f"worker {lost.node} died while running {name}; "
                                      "try again") from None
                log.warning("job %s (%s): worker %s died; sending it again", job_id, name, lost.node)
                self.send(name, kwargs, host=host, job_id=job_id, expires=left)
        if popped is None:
            popped = self._give_up(job_id, f"no worker answered {name} on queue {queue} "
                                            f"within {timeout:g}s")
        return decode_reply(popped)

    def await_reply(self, job_id: str, timeout: float, missed: str) -> Any:
        """Block until the reply of a job whose waiting flag the caller set (a claim queued for
        the pool), or raise Unavailable saying ``missed`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        popped = None
        # In slices: a blocking read longer than the Redis client's socket timeout (redis-py's
        # default is 5 s) would fail as a timeout of the connection itself.
        while popped is None and (left := deadline - time.monotonic()) > 0:
            popped = self.store.pop_reply(job_id, min(left, WATCH_SLICE))
        if popped is None:
            popped = self._give_up(job_id, f"{missed} within {timeout:g}s")
        return decode_reply(popped)

    def _give_up(self, job_id: str, why: str) -> str:
        """Stop waiting; a reply that landed at that very moment is taken, else Unavailable."""
        if self.store.stop_waiting(job_id):
            raise Unavailable(why)
        popped = self.store.pop_reply(job_id, 5)
        if popped is None:
            raise Unavailable(f"job {job_id}: its reply was lost")
        return popped

    def _wait(self, name: str, job_id: str, deadline: float):
        """BLPOP the reply until the deadline (None then). Past the first slice, also watch the
        worker running the job, and raise WorkerLost as soon as it stops beating."""
        runner = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            popped = self.store.pop_reply(job_id, min(left, WATCH_SLICE))
            if popped is not None:
                return popped
            runner = self.store.worker_of(job_id) or runner
            if runner and not self.store.worker_alive(runner):
                raise WorkerLost(runner)

    def send(self, name: str, kwargs: dict, *, host: str | None = None, job_id: str | None = None,
             expires: float | None = None, countdown: float | None = None) -> None:
        """Send a job to the queue ``queue_for`` names, without waiting (teardowns, refills, the
        relays of streams, and what ``run`` waits for)."""
        self.celery.send_task(name, kwargs=kwargs, queue=queue_for(name, host), task_id=job_id,
                              expires=expires, countdown=countdown,
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
