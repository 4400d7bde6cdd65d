"""Every setting of the fleet, declared once, typed, with its default.

The names, formats and defaults are the agentscope-runtime sandbox server's, so an existing ``.env``
means the same here. A handful of fleet-only settings (``FLEET_*``, ``REDIS_URL``, ``TOOL_TIMEOUT``)
follow them. Nothing else in the project reads ``os.environ``: the API, the workers and the command
line all build one :class:`Settings` with :func:`load_settings`.

Sources, lowest priority first: the defaults below, ``./.env`` (never overriding the environment),
the environment, then a ``--config`` file (which overrides the environment, as upstream).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dotenv import dotenv_values

from .errors import SettingsError

#: Passed by ``runtime-sandbox-server`` to the processes it starts.
CONFIG_FILE_VAR = "SANDBOX_FLEET_CONFIG"
EXTENSIONS_VAR = "SANDBOX_FLEET_EXTENSIONS"

DEPLOYMENTS = ("docker", "gvisor", "boxlite", "k8s", "agentrun", "fc", "cloud")
#: Accepted too, unlisted: the test suite's own backend (tests/doubles), which exists only in
#: processes where the tests' extension registered it (backends.register_backend).
TEST_DEPLOYMENTS = ("local-process-for-tests",)


# -- parsers: each turns the text of one variable into its value, or raises ValueError ------------

def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _optional_str(text: str) -> str | None:
    return text if text.strip() else None


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a whole number >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("expected a number > 0")
    return value


def _size(text: str) -> str:
    from .limits import size_bytes  # limits imports nothing of settings

    size_bytes(text, "the value")
    return text.strip().lower()


def _create_timeout(text: str) -> int:
    # A create job must finish well inside Redis' redelivery timeout (sandbox_core.celery_app).
    value = int(text)
    if not 1 <= value <= 120:
        raise ValueError("expected seconds from 1 to 120")
    return value


def _str_list(text: str) -> tuple[str, ...]:
    """A single value, a comma list, or a JSON list (upstream's DEFAULT_SANDBOX_TYPE formats)."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = text[1:-1].split(",")
    else:
        items = text.split(",")
    return tuple(str(item).strip().strip("'\"") for item in items if str(item).strip())


def _optional_str_list(text: str) -> tuple[str, ...] | None:
    return _str_list(text) if text.strip() else None


def _port_range(text: str) -> tuple[int, int]:
    try:
        start, end = json.loads(text.replace("(", "[").replace(")", "]"))
        start, end = int(start), int(end)
    except (ValueError, TypeError) as e:
        raise ValueError("expected a JSON pair such as [49152,59152]") from e
    if not 0 < start < end <= 65536:
        raise ValueError("expected [start, end) with 0 < start < end <= 65536")
    return start, end


def _mounts(text: str) -> dict[str, str] | None:
    if not text.strip():
        return None
    value = json.loads(text)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError('expected a JSON object of host path to container path, e.g. {"/data": "/data"}')
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _deployment(text: str) -> str:
    value = text.strip().lower()
    return value if value in TEST_DEPLOYMENTS else _choice(*DEPLOYMENTS)(text)


def _setting(default: Any, parse: Callable[[str], Any] = str, doc: str = "", *, fleet: bool = False):
    """Declare one setting: its default, the parser of its text form, and a line of help."""
    return field(default=default, metadata={"parse": parse, "doc": doc, "fleet": fleet})


@dataclass(frozen=True)
class Settings:
    # Service
    HOST: str = _setting("127.0.0.1", doc="API bind address; 0.0.0.0 for external access")
    PORT: int = _setting(8000, int, "API port")
    WORKERS: int = _setting(1, _positive_int, "API (gunicorn) worker processes")
    DEBUG: bool = _setting(False, _bool, "debug logging and tracebacks in logs")
    BEARER_TOKEN: str | None = _setting(None, _optional_str, "token clients must send; unset = no auth")
    # Logging (sandbox_core/logs.py)
    LOG_LEVEL: str = _setting(
        "info", _choice("debug", "info", "warning", "error", "critical"),
        "log level of every process (DEBUG=true: debug)", fleet=True)
    LOG_FORMAT: str = _setting(
        "text", _choice("text", "json"), "text, or json: one JSON object a line for log shippers",
        fleet=True)

    # Manager
    DEFAULT_SANDBOX_TYPE: tuple = _setting(
        ("base",), _str_list, "pooled type(s): single, comma list or JSON list")
    POOL_SIZE: int = _setting(1, _non_negative_int, "warm sandboxes kept per pooled type")
    AUTO_CLEANUP: bool = _setting(True, _bool, "release this fleet's sandboxes when the server stops")
    CONTAINER_PREFIX_KEY: str = _setting(
        "runtime_sandbox_container_", doc="name prefix of every sandbox container")
    CONTAINER_DEPLOYMENT: str = _setting(
        "docker", _deployment, "isolation backend: docker, gvisor, boxlite, k8s, agentrun, fc")

    # Mounts
    DEFAULT_MOUNT_DIR: str = _setting(
        "sessions_mount_dir", doc="host folder holding each sandbox's /workspace (<dir>/<id>)")
    READONLY_MOUNTS: dict | None = _setting(
        None, _mounts, 'read-only mounts, JSON {"/host/path": "/container/path"}')
    ALLOW_MOUNT_DIR: bool = _setting(False, _bool, "let /create choose the host folder (mount_dir)")
    STORAGE_FOLDER: str | None = _setting(
        None, _optional_str, "copy workspaces to/from this folder (or OSS prefix) on release/restore")
    PORT_RANGE: tuple = _setting((49152, 59152), _port_range, "host ports for sandboxes, [start, end)")
    DOCKER_ACCESS_MODE: str = _setting(
        "bridge", _choice("bridge", "port"), "how workers reach a Docker or gVisor sandbox: bridge "
        "= <its address on the fleet's bridge>:80, no host port; port = 127.0.0.1:<a port of "
        "PORT_RANGE> published by Docker, for workers that cannot reach the bridge (rootless "
        "Docker, Docker Desktop)", fleet=True)

    # Redis
    REDIS_ENABLED: bool = _setting(
        False, _bool, "use the Redis below; false = runtime-sandbox-server runs a private one")
    REDIS_SERVER: str = _setting("localhost", doc="Redis host")
    REDIS_PORT: int = _setting(6379, int, "Redis port")
    REDIS_DB: int = _setting(0, _non_negative_int, "Redis database number")
    REDIS_USER: str | None = _setting(None, _optional_str, "Redis ACL user")
    REDIS_PASSWORD: str | None = _setting(None, _optional_str, "Redis password")
    REDIS_PORT_KEY: str = _setting(
        "_runtime_sandbox_container_occupied_ports", doc="Redis key of the occupied-port sets")
    REDIS_CONTAINER_POOL_KEY: str = _setting(
        "_runtime_sandbox_container_container_pool", doc="Redis key of the warm pools")
    REDIS_URL: str | None = _setting(
        None, _optional_str, "full Redis URL (redis:// or unix://); overrides REDIS_SERVER etc.",
        fleet=True)

    # Storage
    FILE_SYSTEM: str = _setting("local", _choice("local", "oss"), "where STORAGE_FOLDER lives")
    OSS_ENDPOINT: str = _setting("http://oss-cn-hangzhou.aliyuncs.com", doc="OSS endpoint")
    OSS_ACCESS_KEY_ID: str = _setting("your-access-key-id", doc="OSS access key id")
    OSS_ACCESS_KEY_SECRET: str = _setting("your-access-key-secret", doc="OSS access key secret")
    OSS_BUCKET_NAME: str = _setting("your-bucket-name", doc="OSS bucket")

    # Kubernetes
    K8S_NAMESPACE: str = _setting("default", doc="namespace for sandbox pods")
    KUBECONFIG_PATH: str | None = _setting(None, _optional_str, "kubeconfig file")
    # Kubernetes, sandbox-fleet's own (docs/backends.md, "Kubernetes")
    K8S_ACCESS_MODE: str = _setting(
        "nodeport", _choice("nodeport", "podip"), "how workers reach a sandbox pod: nodeport = "
        "<node address>:<nodePort> of a Service per sandbox (nodePort = the fleet's port, so "
        "PORT_RANGE must lie in the cluster's node-port range); podip = <pod IP>:80, for "
        "workers inside the cluster", fleet=True)
    K8S_WORKSPACE: str = _setting(
        "emptydir", _choice("emptydir", "hostpath"), "a sandbox's /workspace: emptydir (any "
        "node) or hostpath (the worker's DEFAULT_MOUNT_DIR folder on the node: one-node clusters "
        "and workers on the node; also what READONLY_MOUNTS need)", fleet=True)
    K8S_WORKER_CIDRS: tuple = _setting(
        (), _str_list, "addresses workers reach sandboxes from (NetworkPolicy ipBlocks), "
        "comma or JSON list", fleet=True)
    K8S_WORKER_LABELS: str = _setting(
        "app.kubernetes.io/component=sandbox-fleet-worker", doc="labels (k=v,...) of worker "
        "pods in the namespace that may reach sandboxes (NetworkPolicy); empty = none", fleet=True)

    # AgentRun / Function Compute
    AGENT_RUN_ACCOUNT_ID: str | None = _setting(None, _optional_str, "AgentRun account id")
    AGENT_RUN_ACCESS_KEY_ID: str | None = _setting(None, _optional_str, "AgentRun access key id")
    AGENT_RUN_ACCESS_KEY_SECRET: str | None = _setting(None, _optional_str, "AgentRun secret")
    AGENT_RUN_REGION_ID: str = _setting("cn-hangzhou", doc="AgentRun region")
    AGENT_RUN_CPU: float = _setting(2.0, float, "AgentRun vCPUs")
    AGENT_RUN_MEMORY: int = _setting(2048, int, "AgentRun memory (MB)")
    AGENT_RUN_VPC_ID: str | None = _setting(None, _optional_str, "AgentRun VPC")
    AGENT_RUN_VSWITCH_IDS: tuple | None = _setting(None, _optional_str_list, "AgentRun vSwitches")
    AGENT_RUN_SECURITY_GROUP_ID: str | None = _setting(None, _optional_str, "AgentRun group")
    AGENT_RUN_PREFIX: str = _setting("agentscope-sandbox", doc="AgentRun resource prefix")
    AGENT_RUN_LOG_PROJECT: str | None = _setting(None, _optional_str, "AgentRun SLS project")
    AGENT_RUN_LOG_STORE: str | None = _setting(None, _optional_str, "AgentRun SLS store")
    AGENT_RUN_ENDPOINT: str | None = _setting(
        None, _optional_str, "AgentRun API endpoint (host[:port], e.g. a private one); unset = "
        "agentrun.<AGENT_RUN_REGION_ID>.aliyuncs.com", fleet=True)
    AGENT_RUN_PROTOCOL: str = _setting(
        "https", _choice("https", "http"), "protocol of AGENT_RUN_ENDPOINT", fleet=True)
    FC_ACCOUNT_ID: str | None = _setting(None, _optional_str, "FC account id")
    FC_ACCESS_KEY_ID: str | None = _setting(None, _optional_str, "FC access key id")
    FC_ACCESS_KEY_SECRET: str | None = _setting(None, _optional_str, "FC secret")
    FC_REGION_ID: str = _setting("cn-hangzhou", doc="FC region")
    FC_CPU: float = _setting(2.0, float, "FC vCPUs")
    FC_MEMORY: int = _setting(2048, int, "FC memory (MB)")
    FC_VPC_ID: str | None = _setting(None, _optional_str, "FC VPC")
    FC_VSWITCH_IDS: tuple | None = _setting(None, _optional_str_list, "FC vSwitches")
    FC_SECURITY_GROUP_ID: str | None = _setting(None, _optional_str, "FC security group")
    FC_PREFIX: str = _setting("agentscope-sandbox", doc="FC resource prefix")
    FC_LOG_PROJECT: str | None = _setting(None, _optional_str, "FC SLS project")
    FC_LOG_STORE: str | None = _setting(None, _optional_str, "FC SLS store")
    FC_ENDPOINT: str | None = _setting(
        None, _optional_str, "Function Compute API endpoint (host[:port], e.g. a private one); "
        "unset = <FC_ACCOUNT_ID>.<FC_REGION_ID>.fc.aliyuncs.com", fleet=True)
    FC_PROTOCOL: str = _setting(
        "https", _choice("https", "http"), "protocol of FC_ENDPOINT", fleet=True)

    # Lifecycle
    HEARTBEAT_TIMEOUT: int = _setting(
        300, _positive_int, "seconds without a touch before a session's sandboxes are recycled")
    HEARTBEAT_LOCK_TTL: int = _setting(120, _positive_int, "reaper lock lifetime (seconds)")
    WATCHER_SCAN_INTERVAL: int = _setting(
        1, _non_negative_int, "beat period (s) of pool refill and reaper; 0 disables both")
    HEARTBEAT_SCAN_INTERVAL: int | None = _setting(
        None, _optional_int, "reaper period (s) if it should differ; 0 disables the reaper")
    RELEASE_KET_TTL: int = _setting(3600, _positive_int, "seconds a released record is kept")
    MAX_SANDBOX_INSTANCES: int = _setting(
        0, _non_negative_int, "cap on live sandboxes, pools included; 0 = unlimited")

    # Images
    RUNTIME_SANDBOX_REGISTRY: str = _setting("", doc="image registry prefix; empty = none")
    RUNTIME_SANDBOX_IMAGE_NAMESPACE: str = _setting("agentscope", doc="image namespace")
    RUNTIME_SANDBOX_IMAGE_TAG: str = _setting("latest", doc="image tag")
    RUNTIME_SANDBOX_TIMEOUT: int = _setting(
        60, _positive_int, "default tool-call timeout (s) of a sandbox type")

    # Fleet-only
    FLEET_HOST_NAME: str = _setting(
        "", doc="this worker host's name (its queue is host.<name>); default: the machine's",
        fleet=True)
    FLEET_WORKER_CONCURRENCY: int = _setting(
        8, _positive_int, "threads for create/release jobs per worker", fleet=True)
    FLEET_CALL_CONCURRENCY: int = _setting(
        64, _positive_int, "threads for tool calls per worker", fleet=True)
    FLEET_CREATES_IN_FLIGHT: int = _setting(
        0, _non_negative_int, "sandboxes a worker starts at once (until each answers); the "
        "others queue; 0 = one per CPU of the host", fleet=True)
    FLEET_CREATE_TIMEOUT: int = _setting(
        60, _create_timeout, "seconds a create may take until the sandbox answers (1-120)", fleet=True)
    FLEET_RECONCILE_INTERVAL: int = _setting(
        60, _non_negative_int, "seconds between reconciles of a host (also run at start); 0 = start only",
        fleet=True)
    FLEET_AUTH_FAILURES_PER_MINUTE: int = _setting(
        20, _non_negative_int, "wrong tokens a client address may send a minute before 429; 0 = no limit",
        fleet=True)
    FLEET_MAX_BODY_MB: int = _setting(
        64, _positive_int, "largest request body (file uploads) the API accepts, MiB", fleet=True)
    # Attack surface (docs/reliability.md, "Attacks the API withstands")
    FLEET_TRUSTED_PROXIES: int = _setting(
        0, _non_negative_int, "reverse proxies in front of the API whose X-Forwarded-For/-Proto "
        "are believed (client address of the auth rate limit); 0 = none", fleet=True)
    FLEET_MAX_AGENT_REPLY_MB: int = _setting(
        32, _positive_int, "largest answer a worker reads from a sandbox's agent, MiB; a larger "
        "one is dropped and reported", fleet=True)

    # Limits per sandbox (sandbox_core/limits.py: each type's defaults)
    FLEET_MAX_SANDBOX_MEMORY: str = _setting(
        "4g", _size, "most memory a /create may ask for in resource_limits.memory", fleet=True)
    FLEET_MAX_SANDBOX_CPUS: float = _setting(
        4.0, _positive_float, "most CPUs a /create may ask for in resource_limits.cpu", fleet=True)
    FLEET_WORKSPACE_QUOTA: str = _setting(
        "10g", _size, "size limit of each /workspace (project quota where the file system has "
        "one); 0 = none", fleet=True)

    # Lifetimes: every sandbox ends even if its client never releases it (docs/reliability.md)
    FLEET_SANDBOX_IDLE_TIMEOUT: int | None = _setting(
        None, lambda text: _non_negative_int(text) if text.strip() else None,
        "seconds without a call before a sandbox with no session is released; "
        "unset = HEARTBEAT_TIMEOUT, 0 = never", fleet=True)
    FLEET_SANDBOX_MAX_LIFETIME: int = _setting(
        0, _non_negative_int, "seconds after it is handed out that any sandbox is released, "
        "busy or not; 0 = no limit", fleet=True)

    # Operations (docs/operations.md, "Metrics")
    FLEET_METRICS_PUBLIC: bool = _setting(
        False, _bool, "serve /metrics without BEARER_TOKEN (for a Prometheus that cannot send "
        "one); the dashboard and the API stay behind it", fleet=True)

    def __post_init__(self) -> None:
        if not self.FLEET_HOST_NAME:
            object.__setattr__(self, "FLEET_HOST_NAME", socket.gethostname())

    # -- derived values ----------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        if self.REDIS_URL:
            return self.REDIS_URL
        auth = ""
        if self.REDIS_PASSWORD:
            auth = f"{self.REDIS_USER or ''}:{self.REDIS_PASSWORD}@"
        elif self.REDIS_USER:
            auth = f"{self.REDIS_USER}@"
        return f"redis://{auth}{self.REDIS_SERVER}:{self.REDIS_PORT}/{self.REDIS_DB}"

    @property
    def creates_in_flight(self) -> int:
        """FLEET_CREATES_IN_FLIGHT, with 0 read as the host's CPU count: more containers
        starting at once on the same cores start no sooner, and slow every call meanwhile."""
        return self.FLEET_CREATES_IN_FLIGHT or os.cpu_count() or 1

    @property
    def reaper_interval(self) -> int:
        if self.HEARTBEAT_SCAN_INTERVAL is None:
            return self.WATCHER_SCAN_INTERVAL
        return self.HEARTBEAT_SCAN_INTERVAL

    @property
    def sandbox_idle_timeout(self) -> int:
        if self.FLEET_SANDBOX_IDLE_TIMEOUT is None:
            return self.HEARTBEAT_TIMEOUT
        return self.FLEET_SANDBOX_IDLE_TIMEOUT

    def image_uri(self, image_name: str) -> str:
        """``runtime-sandbox-base`` -> ``agentscope/runtime-sandbox-base:latest`` (upstream's rule)."""
        registry = self.RUNTIME_SANDBOX_REGISTRY.rstrip("/")
        prefix = f"{registry}/" if registry else ""
        namespace, tag = self.RUNTIME_SANDBOX_IMAGE_NAMESPACE, self.RUNTIME_SANDBOX_IMAGE_TAG
        return f"{prefix}{namespace}/{image_name}:{tag}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def describe() -> list[tuple[str, str, str, bool]]:
    """(name, default, help, fleet-only) for every setting: the source of the README's table."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        if isinstance(default, (list, tuple, dict)):
            default = json.dumps(list(default) if isinstance(default, tuple) else default)
        rows.append((f.name, "" if default is None else str(default), f.metadata["doc"],
                     f.metadata["fleet"]))
    return rows


def parse_settings(values: Mapping[str, str]) -> Settings:
    """Build settings from text values; a bad one raises SettingsError naming the variable."""
    parsed: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name not in values or values[f.name] is None:
            continue
        text = str(values[f.name])
        try:
            parsed[f.name] = f.metadata["parse"](text)
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            raise SettingsError(f"{f.name}={text!r} is not valid: {e}") from None
    return Settings(**parsed)


def load_settings(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``.env``, the environment and a config file, like the upstream server."""
    environ = dict(os.environ if environ is None else environ)
    config_file = config_file or environ.get(CONFIG_FILE_VAR)
    values: dict[str, str] = {}
    if os.path.exists(".env"):
        values.update({k: v for k, v in dotenv_values(".env").items() if v is not None})
    values.update(environ)
    if config_file:
        if not os.path.exists(config_file):
            raise SettingsError(f"--config {config_file}: no such file")
        values.update({k: v for k, v in dotenv_values(config_file).items() if v is not None})
    settings = parse_settings(values)
    if overrides:
        settings = settings.replace(**overrides)
    return settings


def extensions_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The ``--extension`` values runtime-sandbox-server handed to this process."""
    environ = os.environ if environ is None else environ
    raw = environ.get(EXTENSIONS_VAR, "")
    return [item for item in raw.split(os.pathsep) if item]
