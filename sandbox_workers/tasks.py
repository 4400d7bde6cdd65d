"""The Celery tasks. Each takes names and plain values, re-reads state, and does one thing.

Results go back through the store's reply channel (see ``sandbox_core.jobs``), so each task body
is wrapped by :func:`replying`, which turns the return value or a SandboxError into a reply.
"""

from __future__ import annotations

import base64
import functools
import logging
import time
from typing import Any

from celery import shared_task

from sandbox_core import jobs, metrics, states
from sandbox_core.celery_app import VISIBILITY_TIMEOUT
from sandbox_core.desktop_paths import desktop_path
from sandbox_core.errors import BadRequest, Conflict, NotFound, SandboxError
from sandbox_core.fleet import Fleet

from . import e2b_relay, lifecycle
from .context import current

log = logging.getLogger(__name__)

# A lost create or teardown leaks or loses a sandbox, so those are acknowledged only when done,
# redelivered if the worker dies, and idempotent by sandbox name.
_RELIABLE = {"acks_late": True, "reject_on_worker_lost": True, "typing": False}
_LIFECYCLE_LIMIT = 150
assert _LIFECYCLE_LIMIT < VISIBILITY_TIMEOUT  # else Redis would redeliver a job still running


#: What a task returns when another job (or the same job sent again) gives the reply.
NO_REPLY = object()


def replying(func):
    """Send the task's result (or its SandboxError) to the waiting API process, if any."""

    @functools.wraps(func)
    def wrapper(self, *args, **kwargs):
        ctx = current()
        began = time.monotonic()

        def counted(outcome: Any) -> None:  # after the reply: the caller does not wait for it
            metrics.job_done(ctx, self.name, kwargs, time.monotonic() - began, outcome)

        try:
            result = func(self, ctx, *args, **kwargs)
        except SandboxError as e:
            ctx.store.reply(self.request.id, jobs.encode_reply(error=e))
            counted(e)
            return None
        except Exception as e:  # a bug or a runtime surprise: the caller still gets an answer
            log.exception("job %s (%s) failed", self.request.id, self.name)
            ctx.store.reply(self.request.id, jobs.encode_reply(
                error=SandboxError(f"{self.name} failed: {type(e).__name__}: {e}")))
            counted(e)
            return None
        if result is not NO_REPLY:
            ctx.store.reply(self.request.id, jobs.encode_reply(result))
            counted(result)
        # Nothing for Celery: the result went to the caller, and Celery would log it (tool
        # output is user data) in its "succeeded" line.
        return None

    return wrapper


def fleet(ctx) -> Fleet:
    return Fleet(ctx.settings, ctx.store, ctx.job_client)


@shared_task(name=jobs.CREATE, bind=True, time_limit=_LIFECYCLE_LIMIT, **_RELIABLE)
@replying
def create(self, ctx, name: str, replaces: str | None = None, hops: int = 0) -> Any:
    record = ctx.store.get(name)
    if record is None or record["state"] != states.CREATING:
        # A copy of a create that is over (sent again, or redelivered): touch nothing, answer
        # with the name if it is live, else with what became of it.
        return lifecycle.create_sandbox(ctx, name)
    waited = not record.get("pool_type")
    if waited and not ctx.store.is_waited(self.request.id):
        # The caller gave up before any worker got here: give the slot back, start nothing.
        log.info("sandbox %s: create abandoned by its caller before it started", name)
        lifecycle.fail(ctx, name, "the caller stopped waiting before the create started")
        return name
    try:
        lifecycle.create_sandbox(ctx, name, replaces=replaces)
    except lifecycle.CreateOwnedElsewhere:
        return NO_REPLY  # the live owner replies
    except lifecycle.HostDraining as e:
        if not waited or replaces:
            lifecycle.fail(ctx, name, e.detail)
            raise
        # Another host may serve it; the caller keeps waiting under the same job id, and once it
        # stops waiting the next copy closes the record (the check above).
        log.info("sandbox %s: %s; handing the create on", name, e.detail)
        ctx.job_client.send(jobs.CREATE, {"name": name, "hops": hops + 1}, job_id=self.request.id,
                      countdown=1)
        return NO_REPLY
    if waited and not ctx.store.is_waited(self.request.id):
        log.warning("sandbox %s: its caller stopped waiting; releasing it", name)
        fleet(ctx).release(name)
    return name


@shared_task(name=jobs.TEARDOWN, bind=True, time_limit=_LIFECYCLE_LIMIT, **_RELIABLE)
@replying
def teardown(self, ctx, name: str, keep_workspace: bool = False) -> bool:
    lifecycle.teardown(ctx, name, keep_workspace=keep_workspace)
    return True


@shared_task(name=jobs.CONTROL, bind=True, time_limit=120, typing=False)
@replying
def control(self, ctx, name: str, op: str) -> Any:
    record = ctx.store.get(name)
    if record is None or not record.get("container_id"):
        raise NotFound(f"sandbox not found: {name}")
    container_id = record["container_id"]
    if op == "status":
        return ctx.backend.status(container_id)
    if op == "start":
        ctx.backend.start(container_id)
        started = ctx.backend.inspect(container_id)
        if started and started.url and started.url != record.get("agent_url"):
            # a pod made again may be elsewhere: calls go to its new address from now on
            ctx.store.update(name, **lifecycle.address_fields(started, record.get("port")))
            ctx.agent.forget(name)
        return True
    if op == "stop":
        ctx.backend.stop(container_id, timeout=1)
        return True
    if op in ("pause", "unpause"):  # E2B's pause and resume (sandbox_api/e2b)
        action = getattr(ctx.backend, op, None)
        if action is None:
            raise Conflict(f"the {ctx.settings.CONTAINER_DEPLOYMENT} backend cannot pause sandboxes")
        action(container_id)
        return True
    raise BadRequest(f"unknown control operation {op!r}")


@shared_task(name=jobs.AGENT, bind=True, soft_time_limit=3600, time_limit=3660, typing=False)
@replying
def agent(self, ctx, name: str, op: str, timeout: float, **payload: Any) -> Any:
    """One request into a sandbox's agent. Not retried: a tool call may not be idempotent."""
    record = ctx.agent.address_of(name, ctx.store)
    client = ctx.agent
    if op == "call_tool":
        return client.call_tool(record, payload["tool_name"], payload.get("arguments") or {},
                                timeout)
    if op == "list_tools":
        return client.list_tools(record, payload.get("tool_type"), timeout)
    if op == "add_mcp_servers":
        return client.add_mcp_servers(record, payload.get("server_configs") or {},
                                      bool(payload.get("overwrite")), timeout)
    if op == "check_health":
        return client.check_health(record)
    if op == "e2b_stream":  # an E2B process's output, relayed through Redis (e2b_relay.py)
        return e2b_relay.relay(ctx, record, payload["stream_id"], timeout, payload.get("start"),
                               payload.get("process"), payload.get("kind") or "process")
    if op == "warm":
        client.call_tool(record, "run_shell_command", {"command": "true"}, timeout)
        return True
    if op == "proxy":
        response = client.request(
            record, payload["method"], "/" + payload["path"].lstrip("/"),
            body=base64.b64decode(payload["body"]) if payload.get("body") else None,
            headers=payload.get("headers") or {}, query=payload.get("query") or "",
            timeout=timeout)
    elif op == "desktop":
        # Reached with the desktop token alone: noVNC's files and nothing else, checked again here.
        path = desktop_path(str(payload.get("path", "")))
        if path is None:
            raise NotFound(f"sandbox {name}: not a desktop file")
        response = client.request(record, "GET", "/" + path, timeout=timeout)
    else:
        raise BadRequest(f"unknown agent operation {op!r}")
    return {"status": response.status, "headers": response.headers,
            "body": base64.b64encode(response.body).decode()}


@shared_task(name=jobs.REFILL, bind=True, time_limit=60, typing=False)
@replying
def refill_pools(self, ctx) -> int:
    return fleet(ctx).refill_pools()


@shared_task(name=jobs.REAP, bind=True, time_limit=120, typing=False)
@replying
def reap_idle(self, ctx) -> int:
    return fleet(ctx).reap_idle()
