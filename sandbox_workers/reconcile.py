"""Make a host's containers, records and ports agree again (at worker start, and on demand).

- a container of this fleet and host that no live record claims is removed;
- a live record on this host whose container is gone is closed (state ``error``);
- a port no record on this host holds is freed;
- a live-set entry with no record at all gives its slot back.
"""

from __future__ import annotations

import logging
import time

from backends.base import LABEL_FLEET, LABEL_HOST
from sandbox_core import store as states

from . import lifecycle
from .context import WorkerContext

log = logging.getLogger(__name__)


def reconcile(ctx: WorkerContext) -> dict:
    store, host = ctx.store, ctx.host
    grace = ctx.settings.FLEET_CREATE_TIMEOUT + 30  # a create may legitimately be in flight
    removed, closed, freed = [], [], []

    containers = {c.name: c for c in ctx.backend.list(
        {LABEL_FLEET: ctx.settings.CONTAINER_PREFIX_KEY, LABEL_HOST: host})}
    for name, container in containers.items():
        record = store.get(name)
        if record is None or record["state"] not in states.LIVE_STATES:
            ctx.backend.remove(container.id)
            if record:
                store.free_port(host, record.get("port"))
            store.remove_from_host(host, name)
            removed.append(name)

    for name in store.host_names(host):
        record = store.get(name)
        if name in containers and record and record["state"] in states.LIVE_STATES:
            continue
        if record and record["state"] == states.CREATING and \
                time.time() - (record.get("created_at") or 0) < grace:
            continue
        if record and record["state"] in states.LIVE_STATES:
            lifecycle.fail(ctx, name, "its container disappeared")
            closed.append(name)
        elif name not in removed:
            lifecycle.teardown(ctx, name, keep_workspace=record is not None and
                               record["state"] == states.RECYCLED)

    held = set()
    for name in store.host_names(host):
        record = store.get(name)
        if record and record.get("port"):
            held.add(record["port"])
    for port in store.ports_taken(host) - held:
        store.free_port(host, port)
        freed.append(port)

    for name in store.live_names():
        if store.get(name) is None:
            store.redis.srem(f"{states.NS}live", name)

    if removed or closed or freed:
        log.info("reconcile %s: removed %d containers, closed %d records, freed %d ports",
                 host, len(removed), len(closed), len(freed))
    return {"removed": removed, "closed": closed, "freed_ports": len(freed)}
