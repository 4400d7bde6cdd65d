"""Make a host's containers, records and ports agree again.

``reconcile`` runs when a worker starts and every FLEET_RECONCILE_INTERVAL seconds:
  1. a container of this fleet and host that no live record claims is removed;
  2. a live record on this host whose container is gone (or, for a warm one, not running), or
     whose create died with its worker, is closed (state ``error``), and the leftovers of closed
     records are torn down;
  3. a port that no record on this host holds is freed, and an instance slot with no record at all
     is given back.

``adopt`` runs instead of step 1 when Redis lost the fleet's state while the workers ran (its
epoch marker vanished): records are rebuilt from the containers' labels, so clients carry on.
"""

from __future__ import annotations

import logging
import time

from backends.base import LABEL_FLEET, LABEL_HOST, LABEL_TYPE, Container
from sandbox_core import store as states

from . import lifecycle
from .context import WorkerContext

log = logging.getLogger(__name__)


def reconcile(ctx: WorkerContext) -> dict:
    containers = _our_containers(ctx)
    report = {"removed": _remove_unclaimed(ctx, containers),
              "closed": _close_orphaned_records(ctx, containers),
              "freed_ports": _free_unheld_ports(ctx)}
    _give_back_lost_slots(ctx)
    if any(report.values()):
        log.info("reconcile %s: %s", ctx.host, report)
    return report


def _our_containers(ctx: WorkerContext) -> dict[str, Container]:
    labels = {LABEL_FLEET: ctx.settings.CONTAINER_PREFIX_KEY, LABEL_HOST: ctx.host}
    return {c.name: c for c in ctx.backend.list(labels)}


def _remove_unclaimed(ctx: WorkerContext, containers: dict[str, Container]) -> list[str]:
    removed = []
    for name in containers:
        record = ctx.store.get(name)
        if record is None or record["state"] not in states.LIVE_STATES:
            log.info("sandbox %s: removing its container: no live record claims it", name)
            lifecycle.teardown(ctx, name)
            removed.append(name)
    return removed


def _close_orphaned_records(ctx: WorkerContext, containers: dict[str, Container]) -> list[str]:
    closed = []
    for name in ctx.store.host_names(ctx.host):
        record = ctx.store.get(name)
        if record is None or record["state"] not in states.LIVE_STATES:
            # Released, recycled or gone: make sure its port, container and host entry are back.
            lifecycle.teardown(ctx, name, keep_workspace=bool(record) and
                               record["state"] == states.RECYCLED)
        elif record["state"] == states.CREATING:
            if not _create_in_flight(ctx, record):
                lifecycle.fail(ctx, name, "the worker creating it died")
                closed.append(name)
        elif name not in containers:
            lifecycle.fail(ctx, name, "its container disappeared")
            closed.append(name)
        elif record["state"] == states.WARM and containers[name].status != "running":
            # Nobody stopped a pooled sandbox on purpose: it died, and must not be handed out.
            lifecycle.fail(ctx, name, f"its container is {containers[name].status}")
            closed.append(name)
    return closed


def _create_in_flight(ctx: WorkerContext, record: dict) -> bool:
    """A create still runs while its worker process lives (or while no worker has taken it)."""
    node = record.get("creating_on")
    if node:
        return ctx.store.worker_alive(node)
    return time.time() - (record.get("created_at") or 0) < ctx.settings.FLEET_CREATE_TIMEOUT + 30


def _free_unheld_ports(ctx: WorkerContext) -> int:
    held = set()
    for name in ctx.store.host_names(ctx.host):
        record = ctx.store.get(name)
        if record and record.get("port"):
            held.add(record["port"])
    unheld = ctx.store.ports_taken(ctx.host) - held
    for port in unheld:
        ctx.store.free_port(ctx.host, port)
    return len(unheld)


def _give_back_lost_slots(ctx: WorkerContext) -> None:
    for name in ctx.store.live_names():
        if ctx.store.get(name) is None:
            ctx.store.redis.srem(f"{states.NS}live", name)


def adopt(ctx: WorkerContext) -> list[str]:
    """Rebuild the records of this host's running sandboxes from their containers.

    What Redis alone knew is lost: the client's session id and whether a sandbox was still warm in
    a pool. An adopted sandbox is ``running`` in a session of its own name, so a client that still
    uses it carries on, and one nobody touches is recycled after HEARTBEAT_TIMEOUT.
    """
    adopted = []
    for name, listed in _our_containers(ctx).items():
        if ctx.store.get(name):
            continue
        container = ctx.backend.inspect(listed.id)
        token = (container.environment or {}).get("SECRET_TOKEN") if container else None
        if not container or container.status != "running" or not token or not container.host_port:
            log.info("sandbox %s: cannot adopt it (not running or not ours); removing", name)
            ctx.backend.remove(listed.id)
            continue
        session_id = name.removeprefix(ctx.settings.CONTAINER_PREFIX_KEY)
        ctx.store.open_record(
            name, session_id=session_id, sandbox_type=container.labels.get(LABEL_TYPE, "base"),
            meta={"session_ctx_id": name}, session_ctx_id=name, host=ctx.host, adopted=True,
            container_id=container.id, port=container.host_port, ports=[str(container.host_port)],
            url=f"http://localhost:{container.host_port}", runtime_token=token,
            mount_dir=container.workspace, workspace_owned=True, version=container.image,
            timeout=ctx.settings.RUNTIME_SANDBOX_TIMEOUT)
        ctx.store.redis.sadd(f"{states.NS}live", name)
        ctx.store.redis.sadd(ctx.store.ports_key(ctx.host), container.host_port)
        ctx.store.add_to_host(ctx.host, name)
        ctx.store.finish_create(name, states.RUNNING)
        ctx.store.join_session(name, name)
        adopted.append(name)
        log.info("sandbox %s: adopted after the state store lost its records", name)
    return adopted
