"""The one interface every isolation backend implements (a few primitives, like fsspec's)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from sandbox_core.settings import Settings

#: Labels every sandbox carries, so a host can find its own after a crash or a Redis loss.
LABEL_FLEET = "io.sandbox-fleet.prefix"
LABEL_HOST = "io.sandbox-fleet.host"
LABEL_TYPE = "io.sandbox-fleet.type"
LABEL_NAME = "io.sandbox-fleet.name"
#: What else a host needs to rebuild a sandbox's record when Redis lost it (sandbox_workers.rebuild).
LABEL_SANDBOX_TYPE = "io.sandbox-fleet.sandbox-type"
LABEL_SESSION = "io.sandbox-fleet.session"
LABEL_POOL = "io.sandbox-fleet.pool"
LABEL_META = "io.sandbox-fleet.meta"
LABEL_STORAGE_PATH = "io.sandbox-fleet.storage-path"
LABEL_DESKTOP_TOKEN = "io.sandbox-fleet.desktop-token"
LABEL_WORKSPACE_OWNED = "io.sandbox-fleet.workspace-owned"
LABEL_TIMEOUT = "io.sandbox-fleet.timeout"
LABEL_ENV_KEYS = "io.sandbox-fleet.environment-keys"

#: Headers every call into a sandbox carries, with one value per sandbox: the cloud backends route
#: calls by them to one instance (session affinity: AgentRun's, and upstream's for Function Compute).
SESSION_HEADERS = ("x-agentrun-session-id", "x-agentscope-runtime-session-id")


def session_headers(container_id: str) -> dict[str, str]:
    value = f"s{container_id}"
    return {header: value for header in SESSION_HEADERS}


@dataclass
class ContainerSpec:
    """Everything a backend needs to start one sandbox."""

    name: str
    image: str
    host_port: int
    environment: dict[str, str]
    labels: dict[str, str]
    workspace: str | None = None  # host folder mounted read-write at /workspace
    readonly_mounts: dict[str, str] = field(default_factory=dict)
    memory: str | None = None  # e.g. "512m"; None = unlimited
    cpus: float | None = None
    runtime_config: dict = field(default_factory=dict)
    egress: str = "open"  # public internet only; "lan": every address; "none": nothing off the host
    egress_allow: tuple[str, ...] = ()  # with "open": non-public CIDRs reachable too
    workspace_quota: int = 0  # bytes /workspace may hold, where the backend can enforce it; 0 = none


@dataclass
class Container:
    """A started sandbox as the backend sees it. ``inspect`` fills the optional fields, which let
    a host rebuild a lost record (see sandbox_workers.reconcile.adopt); ``list`` may leave them out."""

    id: str
    name: str
    status: str  # "running", "exited", "paused", "created", ...
    labels: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    environment: dict[str, str] | None = None
    host_port: int | None = None
    workspace: str | None = None
    #: The agent's base URL (scheme, host, port, path) where the fleet must call it instead of
    #: http://127.0.0.1:host_port: a container's address on the fleet's bridge (Docker), a pod's
    #: node port or pod IP (Kubernetes), a cloud endpoint as its service gave it. The worker
    #: stores it in the record (``agent_url``) and sends every call there.
    url: str | None = None
    #: The host interface ``url`` is reached through, where it is a private address of this
    #: host's own bridge (Docker): calls leave through it or not at all (sandbox_core.netpath).
    interface: str | None = None


class Backend(ABC):
    """Create, inspect and remove sandboxes on this host.

    Implementations translate their runtime's errors into ``sandbox_core.errors`` types. The
    sandbox's agent listens on port 80 inside; ``create`` publishes it on 127.0.0.1:host_port,
    or, for a backend that needs no host port (``uses_host_port``), returns where it is as
    ``Container.url``.
    """

    name = "abstract"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def create(self, spec: ContainerSpec) -> Container:
        """Start a sandbox; it is running (its agent may still be starting) when this returns.

        Raises BadRequest when the image is not on this host (nothing is left behind), and
        BackendError when the runtime fails."""

    @abstractmethod
    def remove(self, container_id: str) -> None:
        """Stop and delete a sandbox; a sandbox that is already gone is not an error."""

    @abstractmethod
    def inspect(self, container_id: str) -> Container | None:
        """The sandbox, or None if it does not exist."""

    @abstractmethod
    def list(self, labels: dict[str, str]) -> list[Container]:
        """Every sandbox carrying all these labels (for reconcile)."""

    @abstractmethod
    def start(self, container_id: str) -> None: ...

    @abstractmethod
    def stop(self, container_id: str, timeout: int = 1) -> None: ...

    def default_limits(self) -> dict | None:
        """Memory and CPU (``{"memory": "2048m", "cpu": 2.0}``) for a sandbox whose type and
        create name none, where the backend's service sizes sandboxes itself (the cloud
        backends' upstream settings); None: the fleet's defaults per type (sandbox_core.limits)."""
        return None

    @property
    def uses_host_port(self) -> bool:
        """Whether ``create`` needs ``ContainerSpec.host_port``, a port of PORT_RANGE that the
        fleet holds for the sandbox while it lives. One that does not is given 0 and answers
        with ``Container.url``."""
        return True

    @property
    def workspace_on_host(self) -> bool:
        """Whether a sandbox's /workspace is ``ContainerSpec.workspace``, a folder on this host.
        Where it is not (a pod's emptyDir, a cloud sandbox's disk), the fleet copies it to and
        from storage through the sandbox's agent (sandbox_workers/remote_workspace.py)."""
        return True

    @classmethod
    def check_settings(cls, settings: Settings) -> None:
        """Raise SettingsError for settings this backend cannot run with, without any I/O (the
        server calls it before it starts anything; the constructor may check more, connecting)."""

    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of an image on this host ({} where the backend cannot tell)."""
        return {}

    def status(self, container_id: str) -> str | None:
        container = self.inspect(container_id)
        return container.status if container else None

    def release_workspace(self, path: str) -> None:
        """Give back what ``create`` added to a workspace folder (a size-limited image) before
        the fleet deletes the folder; its container is gone by then."""

    def tidy(self) -> None:
        """Give back what sandboxes that no longer exist left beside them (e.g. a workspace image
        a crash left). Called at every reconcile of the host."""

    def cleanup_host(self) -> None:
        """Remove what this host keeps for its sandboxes beside them (networks, firewall rules,
        workspace images) that no sandbox uses any more. Called once, by the worker that owns the
        host's lifecycle queue, when it stops: other worker processes of the host may still run."""

    def close(self) -> None:
        """Release client connections."""
