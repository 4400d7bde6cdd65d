"""Docker (runc) and gVisor (Docker with the ``runsc`` runtime) sandboxes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import threading

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.errors import NotFound as DockerNotFound

from sandbox_core.errors import BackendError, BadRequest, SettingsError

from .base import LABEL_FLEET, Backend, Container, ContainerSpec

log = logging.getLogger(__name__)

#: Images built by sandbox-fleet say which capabilities their agent needs (none) with this label.
LABEL_CAPABILITIES = "io.sandbox-fleet.capabilities"
#: What an image without that label gets: enough for upstream images (supervisord drops to
#: nginx's user), without Docker's riskier defaults (NET_RAW, MKNOD, SYS_CHROOT, AUDIT_WRITE...).
COMPAT_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL",
                       "NET_BIND_SERVICE"]
PIDS_LIMIT = 512


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
        self._capabilities: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.network = self._ensure_network()

    def create(self, spec: ContainerSpec) -> Container:
        volumes = {}
        if spec.workspace:
            os.makedirs(spec.workspace, exist_ok=True)
            volumes[spec.workspace] = {"bind": "/workspace", "mode": "rw"}
        for host_path, container_path in spec.readonly_mounts.items():
            volumes[os.path.abspath(host_path)] = {"bind": container_path, "mode": "ro"}
        options = {
            "network": self.network,
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "cap_add": self._capabilities_for(spec.image),
            "pids_limit": PIDS_LIMIT,
            "init": False,
        }
        if spec.memory:
            options["mem_limit"] = spec.memory
        if spec.cpus:
            options["nano_cpus"] = int(spec.cpus * 1e9)
        if self.runtime:
            options["runtime"] = self.runtime
        options.update(spec.runtime_config)  # a type's own runtime_config wins, as upstream
        try:
            # create + start, not run(): run() pulls a missing image, which on a host with no
            # registry fails with a DNS error instead of saying which image is missing.
            container = self.client.containers.create(
                spec.image,
                name=spec.name,
                ports={"80/tcp": ("127.0.0.1", spec.host_port)},
                environment=spec.environment,
                labels=spec.labels,
                volumes=volumes,
                **options,
            )
            container.start()
        except ImageNotFound as e:
            raise BadRequest(
                f"image {spec.image} is not on this host; build it with `runtime-sandbox-builder`"
            ) from e
        except DockerException as e:
            self._remove_by_name(spec.name)
            raise BackendError(f"docker could not start {spec.name}: {_explain(e)}") from e
        return Container(id=container.id, name=spec.name, status="running", labels=spec.labels)

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
        workspace = next((m["Source"] for m in data.get("Mounts") or []
                          if m.get("Destination") == "/workspace"), None)
        return Container(
            id=data["Id"], name=data["Name"].lstrip("/"), status=data["State"]["Status"],
            labels=data["Config"].get("Labels") or {}, image=data["Config"].get("Image"),
            environment=dict(e.split("=", 1) for e in data["Config"].get("Env") or [] if "=" in e),
            host_port=int(bindings[0]["HostPort"]) if bindings[0].get("HostPort") else None,
            workspace=workspace)

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

    def close(self) -> None:
        """Remove the fleet's network if no sandbox is attached any more (another worker of the
        fleet may still use it: then Docker refuses, and that is fine)."""
        try:
            self.client.networks.get(self.network).remove()
            _guard_host(self.network.replace("sandbox-fleet-", "sf-"), remove=True)
        except DockerException:
            pass
        self.client.close()

    # -- helpers -----------------------------------------------------------------------------

    def _call(self, method, container_id: str, **kwargs) -> None:
        try:
            method(container_id, **kwargs)
        except DockerNotFound as e:
            raise BackendError(f"container {container_id} does not exist") from e
        except DockerException as e:
            raise BackendError(f"docker failed on {container_id}: {_explain(e)}") from e

    def _capabilities_for(self, image: str) -> list[str]:
        with self._lock:
            if image not in self._capabilities:
                try:
                    labels = self.client.api.inspect_image(image)["Config"].get("Labels") or {}
                except DockerException:
                    labels = {}  # a missing image is reported by run() itself
                if LABEL_CAPABILITIES in labels:
                    caps = [c for c in labels[LABEL_CAPABILITIES].split(",") if c.strip()]
                else:
                    caps = COMPAT_CAPABILITIES
                self._capabilities[image] = caps
            return self._capabilities[image]

    def _ensure_network(self) -> str:
        """The fleet's own bridge: sandboxes on it cannot reach each other (inter-container traffic
        off) nor open connections to the host itself (an INPUT rule on its interface); they still
        reach the outside world, and their published ports still work."""
        digest = hashlib.sha1(self.settings.CONTAINER_PREFIX_KEY.encode()).hexdigest()[:10]
        name, bridge = f"sandbox-fleet-{digest}", f"sf-{digest}"
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
                    raise SettingsError(
                        f"cannot create the sandbox network {name}: {_explain(e)}") from e
        _guard_host(bridge)
        return name

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


def _guard_host(bridge: str, remove: bool = False) -> None:
    """Drop new connections from the sandbox bridge to the host itself. One rule, so workers that
    add it at the same moment cannot get an order wrong; replies to the host's own connections
    (the published ports' proxy) are not new and pass. Idempotent."""
    rule = ["INPUT", "-i", bridge, "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"]
    try:
        if remove:
            while subprocess.run(["iptables", "-D", *rule], capture_output=True).returncode == 0:
                pass  # a race may have added it twice
        elif subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode != 0:
            subprocess.run(["iptables", "-I", *rule], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log.warning("cannot manage iptables rule %s (%s): sandboxes on %s can reach services "
                    "listening on the host's bridge address", " ".join(rule), e, bridge)


def _explain(error: DockerException) -> str:
    if isinstance(error, APIError):
        return str(error.explanation or error)
    return str(error)
