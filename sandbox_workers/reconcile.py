"""Make a host's containers, records and ports agree again.

``reconcile`` runs when a worker starts and every FLEET_RECONCILE_INTERVAL seconds:
  1. a container of this fleet and host that no live record claims is removed;
  2. a live record on this host whose container is gone (or, for a warm one, not running), or
     whose create died with its worker, is closed (state ``error``), and the leftovers of closed
     records are torn down;
  3. a port that no record on this host holds is freed, and an instance slot with no record at all
     is given back;
  4. the recycle markers of sandboxes restored or released since are removed;
  5. the backend gives back what gone sandboxes left beside them (``Backend.tidy``).

``adopt`` runs instead of step 1 when Redis lost the fleet's state while the workers ran (its
epoch marker vanished): records are rebuilt from the containers' labels and the recycle markers,
so clients carry on.
"""

from __future__ import annotations

import logging
import os
import time

from backends.base import LABEL_FLEET, LABEL_HOST, Container
from sandbox_core import states

from . import lifecycle, rebuild, secret
from .context import WorkerContext

log = logging.getLogger(__name__)


def reconcile(ctx: WorkerContext) -> dict:
    containers = _our_containers(ctx)
    report = {"removed": _remove_unclaimed(ctx, containers),
              "closed": _close_orphaned_records(ctx, containers),
              "freed_ports": _free_unheld_ports(ctx),
              "pruned_markers": _prune_markers(ctx)}
    _give_back_lost_slots(ctx)
    ctx.backend.tidy()
    if any(report.values()):
        log.info("reconcile %s: %s", ctx.host, report)
    return report


def _our_containers(ctx: WorkerContext) -> dict[str, Container]:
    labels = {LABEL_FLEET: ctx.settings.CONTAINER_PREFIX_KEY, LABEL_HOST: ctx.host}
    return {c.name: c for c in ctx.backend.list(labels)}


def _remove_unclaimed(ctx: WorkerContext, containers: dict[str, Container]) -> list[str]:
    removed = []
    for name, record in ctx.store.get_many(containers).items():
        if record is None or record["state"] not in states.LIVE_STATES:
            log.info("sandbox %s: removing its container: no live record claims it", name)
            # A recycled one (its teardown may not have run yet) keeps its workspace for restore.
            lifecycle.teardown(ctx, name, keep_workspace=bool(record) and
                               record["state"] == states.RECYCLED)
            removed.append(name)
        elif record.get("host") and record["host"] != ctx.host:
            # A create that another host took over after this host's worker died mid-way.
            log.info("sandbox %s: removing its container here: host %s runs it now", name,
                     record["host"])
            ctx.backend.remove(containers[name].id)
            removed.append(name)
    return removed


def _close_orphaned_records(ctx: WorkerContext, containers: dict[str, Container]) -> list[str]:
    closed = []
    for name, record in ctx.store.get_many(ctx.store.host_names(ctx.host)).items():
        if record is None or record["state"] not in states.LIVE_STATES:
            # Released, recycled or gone: make sure its port, container and host entry are back.
            lifecycle.teardown(ctx, name, keep_workspace=bool(record) and
                               record["state"] == states.RECYCLED)
        elif record.get("host") and record["host"] != ctx.host:
            ctx.store.remove_from_host(ctx.host, name)  # taken over by another host
        elif record["state"] == states.CREATING:
            if not _create_in_flight(ctx, record):
                lifecycle.fail(ctx, name, "the worker creating it died")
                closed.append(name)
        elif name not in containers or (record["state"] == states.WARM and
                                        containers[name].status != "running"):
            # The listing is older than the record: a create may have finished in between. Look
            # at the container itself before closing anything.
            container = ctx.backend.inspect(record.get("container_id") or name)
            if container is None:
                lifecycle.fail(ctx, name, "its container disappeared")
                closed.append(name)
            elif record["state"] == states.WARM and container.status != "running":
                # Nobody stopped a pooled sandbox on purpose: it died, and must not be handed out.
                lifecycle.fail(ctx, name, f"its container is {container.status}")
                closed.append(name)
    return closed


def _create_in_flight(ctx: WorkerContext, record: dict) -> bool:
    """A create still runs while its worker process lives, while no worker has taken it, or while
    its caller waits (the caller's job client sends it again for another worker to take over)."""
    node = record.get("creating_on")
    if record.get("create_job") and ctx.store.is_waited(record["create_job"]):
        return True
    if node:
        return ctx.store.worker_alive(node)
    return time.time() - (record.get("created_at") or 0) < ctx.settings.FLEET_CREATE_TIMEOUT + 30


def _free_unheld_ports(ctx: WorkerContext) -> int:
    held = {record["port"] for record in ctx.store.get_many(ctx.store.host_names(ctx.host)).values()
            if record and record.get("port")}
    unheld = ctx.store.ports_taken(ctx.host) - held
    for port in unheld:
        ctx.store.free_port(ctx.host, port)
    return len(unheld)


def _give_back_lost_slots(ctx: WorkerContext) -> None:
    for name, record in ctx.store.get_many(ctx.store.live_names()).items():
        if record is None:
            ctx.store.give_back_instance(name)


def adopt(ctx: WorkerContext) -> list[str]:
    """Rebuild the records of this host's sandboxes after the state store lost them: the live ones
    from their containers' labels, the recycled ones from their markers (see ``rebuild``).

    Lost all the same: whether a pooled sandbox was still warm, and which session claimed it (a
    claim comes after its labels are set). Such a sandbox is ``running`` in a session of its own
    name, so a client that still uses it carries on, and one nobody touches is recycled after
    HEARTBEAT_TIMEOUT.
    """
    adopted = []
    for name, listed in _our_containers(ctx).items():
        if ctx.store.get(name):
            continue
        container = ctx.backend.inspect(listed.id)
        token = secret.token_of(container)
        if not container or container.status != "running" or not token or not (
                container.host_port or container.url):
            log.info("sandbox %s: cannot adopt it (not running or not ours); removing", name)
            ctx.backend.remove(listed.id)
            continue
        fields = rebuild.fields_from_labels(ctx.settings, container)
        session = fields.pop("session_ctx_id") or (name if fields["pool_type"] else None)
        meta = fields.pop("meta") or ({"session_ctx_id": session} if session else {})
        ctx.store.open_record(
            name, session_id=name.removeprefix(ctx.settings.CONTAINER_PREFIX_KEY), meta=meta,
            session_ctx_id=session, host=ctx.host, adopted=True,
            container_id=container.id, port=container.host_port,
            **lifecycle.address_fields(container, container.host_port), agent_secret=token,
            mount_dir=container.workspace, version=container.image, **fields)
        ctx.store.hold_instance(name)
        if container.host_port:
            ctx.store.hold_port(ctx.host, container.host_port)
        ctx.store.add_to_host(ctx.host, name)
        # As at create: a sandbox with no session is "warm" out of any pool (and has an idle limit).
        ctx.store.finish_create(name, states.RUNNING if session else states.WARM)
        if session:
            ctx.store.join_session(name, session)
        adopted.append(name)
        log.info("sandbox %s: adopted after the state store lost its records", name)
    return adopted + _adopt_recycled(ctx)


def _adopt_recycled(ctx: WorkerContext) -> list[str]:
    """Bring back recycled records from their markers, so a session's next call restores the
    sandbox with its workspace. A marker whose workspace is gone, or in use by a live sandbox (it
    was restored since), is stale and removed."""
    in_use = {r.get("mount_dir") for r in map(ctx.store.get, ctx.store.host_names(ctx.host)) if r}
    adopted = []
    for marker in rebuild.read_markers(ctx.settings, ctx.host):
        name = marker["container_name"]
        if ctx.store.get(name):
            continue
        if marker["mount_dir"] in in_use or not os.path.isdir(marker["mount_dir"]):
            rebuild.remove_marker(ctx.settings, name)
            continue
        in_use.add(marker["mount_dir"])
        ctx.store.put(name, **{k: marker.get(k) for k in rebuild.MARKER_FIELDS},
                      state=states.RECYCLED, adopted=True, updated_at=time.time())
        ctx.store.join_session(name, marker["session_ctx_id"])
        adopted.append(name)
        log.info("sandbox %s: recycled record rebuilt from its marker after the state store "
                 "lost its records", name)
    return adopted


def _prune_markers(ctx: WorkerContext) -> int:
    """Remove the recycle markers of sandboxes restored or released since. A marker without any
    record stays: after a Redis loss it is what adopt rebuilds the record from."""
    pruned = 0
    for marker in rebuild.read_markers(ctx.settings, ctx.host):
        record = ctx.store.get(marker["container_name"])
        if (record and record["state"] != states.RECYCLED) or not os.path.isdir(marker["mount_dir"]):
            rebuild.remove_marker(ctx.settings, marker["container_name"])
            pruned += 1
    return pruned
