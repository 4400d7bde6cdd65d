"""Docker (runc) and gVisor (Docker with the ``runsc`` runtime) sandboxes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.errors import NotFound as DockerNotFound

from sandbox_core import safecopy
from sandbox_core.errors import BackendError, BadRequest, PortTaken, SettingsError

from . import capabilities
from . import egress as rules
from .base import LABEL_FLEET, Backend, Container, ContainerSpec
from .workspace_quota import WorkspaceQuota

log = logging.getLogger(__name__)

PIDS_LIMIT = 512
#: The letter an egress mode adds to its bridge's name (Linux allows 15 characters).
_MODE_TAGS = {"open": "", "lan": "l", "none": "x"}


class DockerBackend(Backend):
    name = "docker"
    runtime: str | None = None

    def __init__(self, settings) -> None:
        super().__init__(settings)
        try:
            self.client = docker.from_env(timeout=60, max_pool_size=32)
            self.client.ping()
        except DockerException as e:
            raise SettingsError(f"CONTAINER_DEPLOYMENT={self.name}: cannot reach Docker: {e}") from e
        self._image_labels: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._digest = hashlib.sha1(self.settings.CONTAINER_PREFIX_KEY.encode()).hexdigest()[:10]
        #: (egress mode, allowed CIDRs) -> the fleet's network for it
        self.networks: dict[tuple[str, tuple[str, ...]], str] = {}
        #: network name -> its host bridge, for networks this process did not make (_interface_of)
        self._bridges: dict[str, str | None] = {}
        self._host_cpus = float(self.client.info().get("NCPU") or os.cpu_count() or 1)
        self.quota = WorkspaceQuota(self.settings.DEFAULT_MOUNT_DIR)
        self._network_for("open")  # guard the host from the start

    def create(self, spec: ContainerSpec) -> Container:
        volumes = {}
        if spec.workspace:
            _make_workspace(spec.workspace)
            self._limit_workspace(spec)
            volumes[spec.workspace] = {"bind": "/workspace", "mode": "rw"}
        for host_path, container_path in spec.readonly_mounts.items():
            volumes[os.path.abspath(host_path)] = {"bind": container_path, "mode": "ro"}
        options = {
            "network": self._network_for(spec.egress, spec.egress_allow),
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "cap_add": self._capabilities_for(spec.image),
            "pids_limit": PIDS_LIMIT,
            "init": False,
        }
        if spec.memory:
            options["mem_limit"] = spec.memory
        if spec.cpus:
            # Docker refuses more CPUs than the host has; a 2-CPU type on a 1-CPU host gets 1.
            options["nano_cpus"] = int(min(spec.cpus, self._host_cpus) * 1e9)
        if self.runtime:
            options["runtime"] = self.runtime
        options.update(spec.runtime_config)  # a type's own runtime_config wins, as upstream
        if options.get("mem_limit") and "memswap_limit" not in spec.runtime_config:
            options["memswap_limit"] = options["mem_limit"]  # no swap on top: the limit is real
        try:
            container = self._create_and_start(spec, volumes, options)
            url = None if self.uses_host_port else bridge_url(
                self.client.api.inspect_container(container.id))
            interface = self._interface_of(options["network"]) if url else None
        except ImageNotFound as e:
            raise BadRequest(
                f"image {spec.image} is not on this host; build it with `runtime-sandbox-builder`"
            ) from e
        except DockerException as e:
            self._remove_by_name(spec.name)
            explanation = _explain(e)
            if "address already in use" in explanation or "port is already allocated" in explanation:
                raise PortTaken(f"port {spec.host_port} was taken before {spec.name} could bind it") from e
            raise BackendError(f"docker could not start {spec.name}: {explanation}") from e
        if not (url or self.uses_host_port):
            self._remove_by_name(spec.name)
            raise BackendError(f"docker started {spec.name} with no address on its network")
        return Container(id=container.id, name=spec.name, status="running", labels=spec.labels,
                         url=url, interface=interface)

    @property
    def uses_host_port(self) -> bool:
        """DOCKER_ACCESS_MODE=port publishes the agent on 127.0.0.1:host_port (a ``docker-proxy``
        process and NAT rules per sandbox); bridge, the default, has the worker dial the
        container's own address, which only this host reaches (measured in docs/benchmarks.md)."""
        return self.settings.DOCKER_ACCESS_MODE == "port"

    def _create_and_start(self, spec: ContainerSpec, volumes: dict, options: dict):
        """create + start, not run(): run() pulls a missing image, which on a host with no
        registry fails with a DNS error instead of saying which image is missing.

        The fleet's network is shared by every worker process of the host and cached by each: one
        that another process removed (it had no sandbox left when that process closed) is made
        again, once, rather than failing the create."""
        for attempt in (1, 2):
            try:
                ports = {"80/tcp": ("127.0.0.1", spec.host_port)} if self.uses_host_port else None
                container = self.client.containers.create(
                    spec.image, name=spec.name, ports=ports, environment=spec.environment,
                    labels=spec.labels, volumes=volumes, **options)
                container.start()
                return container
            except DockerNotFound as e:
                if attempt == 2 or "network" not in _explain(e):
                    raise
                log.warning("sandbox %s: network %s was removed by another process; making it "
                            "again", spec.name, options["network"])
                self._remove_by_name(spec.name)
                self._forget_network(options["network"])
                options = {**options, "network": self._network_for(spec.egress, spec.egress_allow)}
        raise AssertionError("unreachable")

    def _forget_network(self, name: str) -> None:
        with self._lock:
            self.networks = {k: v for k, v in self.networks.items() if v != name}

    def remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except DockerNotFound:
            pass
        except APIError as e:
            if e.status_code == 409:  # removal already in progress
                return
            raise BackendError(f"docker could not remove {container_id}: {_explain(e)}") from e

    def inspect(self, container_id: str) -> Container | None:
        try:
            data = self.client.api.inspect_container(container_id)
        except DockerNotFound:
            return None
        except DockerException as e:
            raise BackendError(f"docker could not inspect {container_id}: {_explain(e)}") from e
        bindings = (data["HostConfig"].get("PortBindings") or {}).get("80/tcp") or [{}]
        host_port = int(bindings[0]["HostPort"]) if bindings[0].get("HostPort") else None
        workspace = next((m["Source"] for m in data.get("Mounts") or []
                          if m.get("Destination") == "/workspace"), None)
        network, url = (None, None) if host_port else bridge_address(data)
        return Container(
            id=data["Id"], name=data["Name"].lstrip("/"), status=data["State"]["Status"],
            labels=data["Config"].get("Labels") or {}, image=data["Config"].get("Image"),
            environment=dict(e.split("=", 1) for e in data["Config"].get("Env") or [] if "=" in e),
            host_port=host_port, workspace=workspace, url=url,
            interface=self._interface_of(network) if network else None)

    def list(self, labels: dict[str, str]) -> list[Container]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            found = self.client.api.containers(all=True, filters=filters)
        except DockerException as e:
            raise BackendError(f"docker could not list containers: {_explain(e)}") from e
        return [Container(id=c["Id"], name=c["Names"][0].lstrip("/"), status=c["State"],
                          labels=c.get("Labels") or {}) for c in found]

    def start(self, container_id: str) -> None:
        self._call(self.client.api.start, container_id)

    def stop(self, container_id: str, timeout: int = 1) -> None:
        self._call(self.client.api.stop, container_id, timeout=timeout)

    def pause(self, container_id: str) -> None:
        """Freeze every process of the sandbox (cgroup freezer): memory and files stay."""
        self._call(self.client.api.pause, container_id)

    def unpause(self, container_id: str) -> None:
        self._call(self.client.api.unpause, container_id)

    def cleanup_host(self) -> None:
        """Remove the fleet's networks that no sandbox is attached to any more (a sandbox of
        another worker host on this engine may still use one: then Docker refuses, and that is
        fine), and their firewall rules."""
        with contextlib.suppress(BackendError, OSError, DockerException):
            self.quota.sweep(self._workspaces_in_use())
        for (egress, allow), name in list(self.networks.items()):
            try:
                self.client.networks.get(name).remove()
            except DockerException:
                continue
            bridge = self._bridge(egress, allow)
            rules.iptables(rules.host_guard(bridge), remove=True)
            rules.iptables(rules.inbound_guard(bridge), remove=True)
            if egress == "none":
                rules.iptables(rules.block_all(bridge), remove=True)
            elif egress == "open":
                rules.remove_chain(bridge)
            self._forget_network(name)

    def close(self) -> None:
        self.client.close()

    # -- helpers -----------------------------------------------------------------------------

    def _call(self, method, container_id: str, **kwargs) -> None:
        try:
            method(container_id, **kwargs)
        except DockerNotFound as e:
            raise BackendError(f"container {container_id} does not exist") from e
        except DockerException as e:
            raise BackendError(f"docker failed on {container_id}: {_explain(e)}") from e

    def image_labels(self, image: str) -> dict[str, str]:
        with self._lock:
            if image not in self._image_labels:
                try:
                    labels = self.client.api.inspect_image(image)["Config"].get("Labels") or {}
                except DockerException:
                    return {}  # a missing image is reported by create() itself; look again then
                self._image_labels[image] = labels
            return self._image_labels[image]

    def _capabilities_for(self, image: str) -> list[str]:
        return capabilities.for_image(self.image_labels(image))

    def _limit_workspace(self, spec: ContainerSpec) -> None:
        if not spec.workspace_quota or not self.quota.applies_to(spec.workspace):
            return
        self.quota.prepare(spec.workspace, spec.workspace_quota, spec.name)

    def tidy(self) -> None:
        """Workspace images a crash left (empty, unused) go: here at every reconcile, not at each
        create, whose path it would lengthen by a look at every image of the host."""
        try:
            self.quota.sweep(self._workspaces_in_use())
        except (BackendError, OSError, DockerException) as e:
            log.warning("sweeping emptied workspace images failed: %s", e)

    def release_workspace(self, path: str) -> None:
        if self.quota.applies_to(path):
            self.quota.release(path, self._workspace_in_use)

    def _workspace_in_use(self, path: str) -> bool:
        """Whether any container (running or not) still mounts this host folder."""
        return bool(self.client.api.containers(all=True, filters={"volume": path}))

    def _workspaces_in_use(self) -> Callable[[str], bool]:
        """_workspace_in_use for a sweep: one listing of every container's mounts, made at the
        first question, for all of them (a look per image cost a sweep of a host of 400 idle
        sandboxes 400 listings). The sweep holds the images' lock, under which no create can
        mount an image; one younger than the sweep's age it leaves alone anyway."""
        mounted: set[str] | None = None

        def in_use(path: str) -> bool:
            nonlocal mounted
            if mounted is None:
                mounted = {m.get("Source") for c in self.client.api.containers(all=True)
                           for m in c.get("Mounts") or []}
            return path in mounted

        return in_use

    def _bridge(self, egress: str, allow: tuple[str, ...] = ()) -> str:
        """At most 15 characters: sf- (open), sfl- (lan), sfx- (none), sfa<hash> (open + allow)."""
        if allow:
            key = f"{self.settings.CONTAINER_PREFIX_KEY}|{','.join(allow)}"
            return f"sfa{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        return f"sf{_MODE_TAGS[egress]}-{self._digest}"

    def _network_for(self, egress: str, allow: tuple[str, ...] = ()) -> str:
        """The fleet's bridge for an egress policy, made by whichever worker needs it first.

        On every one, sandboxes cannot reach each other (inter-container traffic off) nor open
        connections to the host itself (an INPUT rule), and nothing off the host opens one to
        them (a DOCKER-USER rule); the host itself still reaches their agents. On the
        ``open`` ones, what they send to non-public addresses is rejected (backends/egress.py); on
        the ``none`` one, nothing they send is forwarded off the host (a DOCKER-USER rule).
        Without its rules no sandbox is started on one."""
        key = (egress, tuple(allow))
        with self._lock:
            if key in self.networks:
                return self.networks[key]
        bridge = self._bridge(egress, key[1])
        name = f"sandbox-fleet-{self._digest}" + {"open": "", "lan": "-lan", "none": "-x"}[egress]
        if allow:
            name += f"-{bridge}"
        try:
            self.client.networks.get(name)
        except DockerNotFound:
            try:
                self.client.networks.create(
                    name, driver="bridge", check_duplicate=True,
                    options={"com.docker.network.bridge.enable_icc": "false",
                             "com.docker.network.bridge.name": bridge},
                    labels={LABEL_FLEET: self.settings.CONTAINER_PREFIX_KEY})
            except APIError as e:
                try:  # another worker of this host may have made it at the same moment
                    self.client.networks.get(name)
                except DockerNotFound:
                    raise BackendError(f"cannot create the sandbox network {name}: {_explain(e)}") from e
        if not rules.iptables(rules.host_guard(bridge)):
            log.warning("sandboxes on %s can reach services listening on the host's bridge address",
                        bridge)
        if not rules.iptables(rules.inbound_guard(bridge)):
            log.warning("sandboxes on %s are reached by whoever routes its subnet through this "
                        "host, where its FORWARD policy lets them", bridge)
        if egress == "none" and not rules.iptables(rules.block_all(bridge)):
            raise BackendError(f"cannot block egress on {bridge} (iptables DOCKER-USER); refusing to "
                               "start a sandbox of a type that asks for egress none")
        if egress == "open" and not rules.install_chain(bridge, key[1]):
            raise BackendError(f"cannot keep sandboxes on {bridge} off private and link-local "
                               "addresses (iptables DOCKER-USER); refusing to start them. A type "
                               "that needs every address can say egress='lan'")
        with self._lock:
            self.networks[key] = name
        return name

    def _interface_of(self, network: str) -> str | None:
        """The host bridge of a sandbox's network, which calls to it are bound to: for the
        fleet's own, the name it gave; for another bridge network (a type's ``runtime_config``
        may name one), Docker's. None for a network that is no bridge of this host: its
        reachability is the operator's choice, and calls to it are not pinned."""
        with self._lock:
            for (egress, allow), name in self.networks.items():
                if name == network:
                    return self._bridge(egress, allow)
            if network in self._bridges:
                return self._bridges[network]
        try:
            data = self.client.api.inspect_network(network)
        except DockerException as e:
            log.warning("network %s: cannot find its bridge (%s); calls to its sandboxes are not "
                        "pinned to it", network, _explain(e))
            return None
        bridge = None
        if data.get("Driver") == "bridge":
            bridge = (data.get("Options") or {}).get("com.docker.network.bridge.name") or \
                f"br-{data['Id'][:12]}"
        with self._lock:
            self._bridges[network] = bridge
        return bridge

    def _remove_by_name(self, name: str) -> None:
        """A failed run may have created the container anyway: never leave it behind."""
        with contextlib.suppress(DockerException):
            self.client.api.remove_container(name, force=True)


class GVisorBackend(DockerBackend):
    """The same containers under gVisor's user-space kernel (runsc registered in dockerd).

    Register runsc with its own ``--network=host`` flag (``scripts/setup --gvisor`` does): the
    sandbox then uses the network namespace Docker made for it, so publishing works as with runc.
    """

    name = "gvisor"
    runtime = "runsc"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        try:
            runtimes = self.client.info().get("Runtimes", {})
        except DockerException as e:
            raise SettingsError(f"CONTAINER_DEPLOYMENT=gvisor: cannot ask Docker for its runtimes: "
                                f"{_explain(e)}") from e
        if "runsc" not in runtimes:
            raise SettingsError(
                "CONTAINER_DEPLOYMENT=gvisor: dockerd has no 'runsc' runtime; run "
                "`scripts/setup --gvisor`, or register it in /etc/docker/daemon.json as "
                "docs/backends.md says and send dockerd SIGHUP")

    def _capabilities_for(self, image: str) -> list[str]:
        """Plus NET_BIND_SERVICE: runsc does not implement ``ip_unprivileged_port_start``, which
        lets runc sandboxes bind port 80 with no capability, so an agent on port 80 needs it.
        It is a capability inside gVisor's own kernel, not the host's."""
        caps = super()._capabilities_for(image)
        return caps if "NET_BIND_SERVICE" in caps else [*caps, "NET_BIND_SERVICE"]


def _make_workspace(path: str) -> None:
    """The sandbox's /workspace folder on the host. Sandboxes run as root with no capabilities,
    so they can write only where uid 0 owns the folder or anyone may write. A worker that is not
    root opens the sandbox's own folder to all, and keeps the folder holding them (the
    DEFAULT_MOUNT_DIR) private to its own user, so no other host user can reach in."""
    # The folder itself is opened without following a link (a chmod through one would open some
    # other folder of the host to all); its parents are the host's own.
    root = os.geteuid() == 0
    safecopy.ensure_dir(path, mode=None if root else 0o777)
    if not root:
        os.chmod(os.path.dirname(os.path.abspath(path)), 0o700)


def bridge_address(data: dict) -> tuple[str, str] | tuple[None, None]:
    """(network name, http://<address>:80) of an inspected container on its network (a sandbox
    has one), (None, None) while it has no address (not running)."""
    for name, network in ((data.get("NetworkSettings") or {}).get("Networks") or {}).items():
        if network.get("IPAddress"):
            return name, f"http://{network['IPAddress']}:80"
    return None, None


def bridge_url(data: dict) -> str | None:
    """The URL of :func:`bridge_address` (None while the container has no address)."""
    return bridge_address(data)[1]


def _explain(error: DockerException) -> str:
    if isinstance(error, APIError):
        return str(error.explanation or error)
    return str(error)
