"""Creating and tearing down sandboxes on this host. Plain functions over a WorkerContext.

Both are idempotent by sandbox name: a redelivered job finds the record and finishes or skips.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time

from backends.base import LABEL_WORKSPACE_OWNED, Container, ContainerSpec
from sandbox_core import jobs, limits, safecopy, states
from sandbox_core.errors import BadRequest, CapacityExceeded, PortTaken, SandboxError, Unavailable
from sandbox_core.registry import get_spec

from . import liveness, rebuild, remote_workspace, secret
from .context import WorkerContext

log = logging.getLogger(__name__)

PORT_ATTEMPTS = 5


def workspace_dir(ctx: WorkerContext, session_id: str) -> str:
    return os.path.abspath(os.path.join(ctx.settings.DEFAULT_MOUNT_DIR, session_id))


class CreateOwnedElsewhere(Exception):
    """Another live worker process runs this create: this copy of the job does nothing."""


class HostDraining(Unavailable):
    """This host is shutting down and starts no more sandboxes."""


def create_sandbox(ctx: WorkerContext, name: str, *, replaces: str | None = None) -> str:
    """Start the sandbox whose record the caller wrote (state ``creating``) and wait until it answers.

    Returns the name. On any failure the container, the port and the instance slot are given back
    and the record is closed as ``error``.
    """
    record = ctx.store.get(name)
    if record is None:
        raise BadRequest(f"sandbox {name}: no record to create from")
    if record["state"] in (states.WARM, states.RUNNING):
        return name  # a redelivered job whose work was done
    if record["state"] != states.CREATING:
        raise BadRequest(f"sandbox {name}: cannot create from state {record['state']}")

    spec = get_spec(ctx.settings, record["sandbox_type"])
    environment = {**spec.environment, **(record.get("environment") or {})}
    # This worker process owns the create from now on; a copy of the job sent again after an
    # owner's death takes over only once that owner stopped beating.
    owned = ctx.store.own_create(name, ctx.host, liveness.NODE)
    if owned < 0:
        raise CreateOwnedElsewhere(name)
    if owned == 0:
        return create_sandbox(ctx, name, replaces=replaces)  # finished or closed meanwhile
    ctx.store.add_to_host(ctx.host, name)
    if ctx.store.is_draining(ctx.host):  # checked after add_to_host: see Fleet.drain
        ctx.store.remove_from_host(ctx.host, name)
        ctx.store.update(name, host=None, creating_on=None)
        raise HostDraining(f"host {ctx.host} is shutting down")
    ctx.backend.remove(name)  # leftovers of an earlier, interrupted attempt
    try:
        token = secrets.token_hex(16)
        workspace = record.get("mount_dir") or workspace_dir(ctx, record["session_id"])
        ctx.store.update(name, agent_secret=token, mount_dir=workspace)
        on_host = ctx.backend.workspace_on_host
        if on_host and record.get("storage_path") and ctx.storage and not replaces:
            _fetch_from_storage(ctx, name, record["storage_path"], workspace)
        with ctx.creates:
            record = _start_and_wait(ctx, name, record, spec, environment, token, workspace)
        if not on_host and record.get("storage_path") and ctx.storage:
            # its files come now, through its agent (a restore's too: its recycle kept them there)
            report = remote_workspace.fill(ctx, record, record["storage_path"])
            log.info("sandbox %s: workspace filled from %s: %s", name, record["storage_path"],
                     report.describe())
    except BaseException as e:  # includes the job's time limit: never leave half a sandbox
        log.warning("sandbox %s: create failed: %s", name, e)
        fail(ctx, name, str(e))
        raise

    session = record.get("session_ctx_id")
    if not ctx.store.finish_create(name, states.RUNNING if session else states.WARM):
        log.info("sandbox %s: released while it started; tearing it down", name)
        teardown(ctx, name)
        return name
    if session:
        ctx.store.join_session(name, session)
    if replaces:
        _replace(ctx, replaces, name)
    # The calls worker opens its connection and runs a first command now, so the client's first
    # call does not pay for a cold connection, cold pages and the agent's lazy imports (~5 ms).
    ctx.job_client.send(jobs.AGENT, {"name": name, "op": "warm", "timeout": 10}, host=ctx.host)
    if record.get("pool_type"):
        _pool_ready(ctx, record["pool_type"], name)
    else:
        log.info("sandbox %s: %s at %s", name, "running" if session else "warm",
                 record.get("agent_url") or f"port {record.get('port')}")
    return name


def address_fields(container: Container, port: int | None) -> dict:
    """Where the sandbox's agent is, as the record keeps it: ``ports`` (the host port it holds,
    if any), ``url`` (what get_info shows) and, for a sandbox not on this host's loopback (a
    bridge address, a pod, a cloud endpoint), ``agent_url``, which the worker then calls instead
    of 127.0.0.1:port, through ``agent_interface`` when the backend names one (a bridge)."""
    ports = [str(port)] if port else []
    if container.url:
        return {"ports": ports, "url": container.url, "agent_url": container.url,
                "agent_interface": container.interface}
    return {"ports": ports, "url": f"http://localhost:{port}"}


def _pool_ready(ctx: WorkerContext, pool_type: str, name: str) -> None:
    """A pooled sandbox is ready: to the oldest claim waiting for one, else into the pool."""
    outcome = ctx.store.pool_ready(pool_type, name, jobs.encode_reply(name))
    if outcome == "surplus":  # its claim gave up, and the pool is full without it
        log.info("sandbox %s: not wanted any more (the %s pool is full); releasing it", name,
                 pool_type)
        record = ctx.store.get(name)
        if record and ctx.store.retire(record) is not None:
            teardown(ctx, name)
    else:
        log.info("sandbox %s: %s", name, {"handed": "running, for a claim that waited",
                                          "pooled": f"warm, in the {pool_type} pool",
                                          "gone": "released while it started"}[outcome])


def _start_and_wait(ctx: WorkerContext, name: str, record: dict, spec, environment: dict,
                    token: str, workspace: str) -> dict:
    """Start the container and wait until its agent answers; returns the record as it is then."""
    container, port = _start(ctx, name, ContainerSpec(
        name=name,
        image=spec.image,
        host_port=0,  # chosen by _start
        environment={**environment, **secret.environment(ctx.backend, spec.image, token),
                     "NGINX_TIMEOUT": str(spec.timeout)},
        labels={**rebuild.labels_of(ctx.settings, ctx.host, record), **secret.labels(token)},
        workspace=workspace,
        readonly_mounts=ctx.settings.READONLY_MOUNTS or {},
        **limits.container_limits(ctx.settings, spec, record, ctx.backend.default_limits()),
        runtime_config=spec.runtime_config,
        egress=spec.egress,
        egress_allow=spec.egress_allow,
    ))
    ctx.store.update(name, container_id=container.id, **address_fields(container, port))
    record = ctx.store.get(name)
    ctx.agent.wait_ready(record, time.monotonic() + ctx.settings.FLEET_CREATE_TIMEOUT)
    return record


def _replace(ctx: WorkerContext, old: str, new: str) -> None:
    """The restored sandbox takes over the recycled one's place in its session."""
    old_record = ctx.store.get(old)
    ctx.store.update(old, state=states.REPLACED, redirect_to=new)
    if old_record and old_record.get("session_ctx_id"):
        ctx.store.leave_session(old, old_record["session_ctx_id"])
    ctx.store.expire_record(old)
    log.info("sandbox %s: replaced by %s", old, new)


def fail(ctx: WorkerContext, name: str, reason: str) -> None:
    """Close a sandbox that could not be created: container, port, slot and pool place go back."""
    record = ctx.store.get(name)
    if record is None:
        return
    ctx.store.retire(record, states.RELEASED)
    ctx.store.update(name, state=states.ERROR, recycle_reason=reason[:500])
    if record.get("pool_type"):
        ctx.store.pool_abandon(record["pool_type"], name, jobs.encode_reply(error=Unavailable(
            f"a {record['pool_type']} sandbox could not be started: {reason[:500]}")))
    teardown(ctx, name, keep_workspace=False)


def teardown(ctx: WorkerContext, name: str, keep_workspace: bool = False) -> None:
    """Remove a sandbox's container and give back its port and workspace. Safe to repeat."""
    record = ctx.store.get(name)
    container = (record or {}).get("container_id") or name
    stray = None if record else _stray_workspace(ctx, name, keep_workspace)
    if record and not ctx.backend.workspace_on_host:
        _save_remote_workspace(ctx, record)  # it goes with the container
    try:
        ctx.backend.remove(container)
    except SandboxError as e:
        log.error("sandbox %s: could not remove container: %s", name, e)
        raise
    if stray:  # no record says what it is: the fleet's own empty-handed folder goes with it
        ctx.backend.release_workspace(stray)
        _remove_workspace(name, stray)
    if record:
        ctx.store.free_port(ctx.host, record.get("port"))
        kept = _keep_in_storage(ctx, record) if ctx.backend.workspace_on_host else True
        # A folder the client chose (ALLOW_MOUNT_DIR) is not the fleet's to delete, nor one whose
        # copy to storage failed.
        if kept and not keep_workspace and record.get("mount_dir") and \
                record.get("workspace_owned") != "0":
            ctx.backend.release_workspace(record["mount_dir"])  # e.g. its size-limited image
            _remove_workspace(name, record["mount_dir"])
    if keep_workspace and record:
        rebuild.write_marker(ctx.settings, record)  # a Redis loss must not lose the session
    ctx.store.remove_from_host(ctx.host, name)
    log.info("sandbox %s: torn down%s", name, " (workspace kept)" if keep_workspace else "")


def _start(ctx: WorkerContext, name: str, container_spec: ContainerSpec) -> tuple:
    """Start the container, on a port of this host's range if its backend publishes one (port
    None otherwise). A port that something outside the fleet binds between our probe and
    Docker's (an outgoing connection's ephemeral port, when PORT_RANGE overlaps that range) is
    skipped and left marked taken until reconcile frees it."""
    if not ctx.backend.uses_host_port:
        return ctx.backend.create(container_spec), None
    for _ in range(PORT_ATTEMPTS):
        port = _take_port(ctx, name)
        ctx.store.update(name, url=f"http://localhost:{port}")
        container_spec.host_port = port
        try:
            return ctx.backend.create(container_spec), port
        except PortTaken as e:
            log.warning("sandbox %s: %s; trying another port", name, e.detail)
    raise CapacityExceeded(f"sandbox {name}: {PORT_ATTEMPTS} ports in a row were taken by others")


def warn_if_ports_shared(settings) -> None:
    """PORT_RANGE inside the kernel's ephemeral range means outgoing connections can take a
    sandbox's port; creates then retry on another, but the range is better reserved."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
            reserved = f.read().strip()
    except (OSError, ValueError):
        return
    start, end = settings.PORT_RANGE
    if start <= high and end - 1 >= low and not reserved:
        log.warning("PORT_RANGE %s overlaps the ephemeral ports %s-%s of outgoing connections; "
                    "reserve it with: sysctl -w net.ipv4.ip_local_reserved_ports=%s-%s",
                    list(settings.PORT_RANGE), low, high, start, end - 1)


def _keep_in_storage(ctx: WorkerContext, record: dict) -> bool:
    """Copy the workspace to its storage_path, if it has one; False if that failed. A pooled
    sandbox no client claimed has none (Fleet.acquire gives it one at the claim)."""
    workspace, target = record.get("mount_dir"), record.get("storage_path")
    if not (workspace and target and ctx.storage and os.path.isdir(workspace)):
        return True
    try:
        report = ctx.storage.upload_folder(workspace, target)
    except Exception as e:  # keep the files on the host rather than lose them
        log.error("sandbox %s: could not copy its workspace to %s (%s); keeping %s",
                  record["container_name"], target, e, workspace)
        return False
    log.info("sandbox %s: workspace copied to %s: %s (links, FIFOs, sockets and devices are "
             "never copied)", record["container_name"], target, report.describe())
    return True


def _save_remote_workspace(ctx: WorkerContext, record: dict) -> None:
    """A workspace that is not a host folder is copied to its storage_path before its sandbox
    goes (release or recycle: either way its files go with the pod or cloud sandbox)."""
    name, target = record["container_name"], record.get("storage_path")
    if not (target and ctx.storage and record.get("agent_secret")):
        return
    try:
        report = remote_workspace.save(ctx, record, target)
    except Exception as e:  # the teardown goes on: a sandbox is not kept for its files
        log.error("sandbox %s: could not copy its workspace to %s: %s; its files go with it",
                  name, target, getattr(e, "detail", e))
        return
    log.info("sandbox %s: workspace copied to %s: %s", name, target, report.describe())


def _fetch_from_storage(ctx: WorkerContext, name: str, source: str, workspace: str) -> None:
    report = ctx.storage.download_folder(source, workspace)
    log.info("sandbox %s: workspace filled from %s: %s", name, source, report.describe())


def _stray_workspace(ctx: WorkerContext, name: str, keep: bool) -> str | None:
    """The workspace of a container no record claims, if it is the fleet's own folder (made in
    DEFAULT_MOUNT_DIR for it, not a client's) and no recycle marker keeps it for a restore."""
    container = ctx.backend.inspect(name)
    workspace = container.workspace if container else None
    if keep or not workspace or container.labels.get(LABEL_WORKSPACE_OWNED) == "0" or \
            os.path.dirname(os.path.abspath(workspace)) != rebuild.markers_dir(ctx.settings) or \
            os.path.exists(rebuild.marker_path(ctx.settings, name)):
        return None
    return workspace


def _remove_workspace(name: str, workspace: str) -> None:
    """Remove a workspace without following any link the sandbox left in it."""
    try:
        safecopy.remove_tree(workspace)
    except OSError as e:
        log.warning("sandbox %s: could not remove its workspace %s: %s", name, workspace, e)


def _take_port(ctx: WorkerContext, name: str) -> int:
    """A port of this host's range that the fleet does not use and nothing else has bound."""
    start, end = ctx.settings.PORT_RANGE
    for _ in range(32):
        port = ctx.store.take_port(ctx.host, name, random.randrange(end - start))
        if _bindable(port):
            return port
        log.info("sandbox %s: port %s is bound outside the fleet; trying another", name, port)
        ctx.store.free_port(ctx.host, port)
    raise CapacityExceeded(f"no bindable port found in PORT_RANGE {list(ctx.settings.PORT_RANGE)}")


def _bindable(port: int) -> bool:
    """Whether Docker will be able to publish on the port. Like Docker's own listener, the probe
    uses SO_REUSEADDR, so connections of a removed sandbox still in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
