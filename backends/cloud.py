"""What the two Alibaba Cloud backends (``agentrun``, ``fc``) share: resource names, the labels a
resource carries, the SDK client's configuration, error translation and bounded waits.

A fleet "host" on a cloud backend is an account and region seen through one worker's
``FLEET_HOST_NAME``: nothing is kept on the worker's machine. Each sandbox's resources are named
``<AGENT_RUN_PREFIX|FC_PREFIX>-<readable>-<digest>`` from the sandbox's name alone (so remove and
inspect work from either), and carry the fleet's labels as JSON in their description, which is
what a listing filters by (neither service filters by it, so the listing asks for the name
prefix and checks the labels itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sandbox_core import limits, polling
from sandbox_core.errors import BackendError, BadRequest, SandboxError, SettingsError, Unavailable

from .base import (
    LABEL_FLEET,
    LABEL_HOST,
    LABEL_NAME,
    LABEL_POOL,
    LABEL_SANDBOX_TYPE,
    LABEL_SESSION,
    LABEL_TIMEOUT,
    LABEL_TYPE,
    LABEL_WORKSPACE_OWNED,
    Backend,
    Container,
    ContainerSpec,
)

log = logging.getLogger(__name__)

#: Function Compute allows 64 characters in a function name; the session-affinity value the
#: worker sends is ``s<name>``, so names stay a few below.
NAME_LIMIT = 60
#: The services' description fields are short; the labels that do not fit are left out, in the
#: order of ``_OPTIONAL`` (what is left is what a listing and an adoption need most).
DESCRIPTION_LIMIT = 256
#: One SDK call: connect and read timeouts in milliseconds (the SDK's unit).
CONNECT_TIMEOUT_MS = 5_000
READ_TIMEOUT_MS = 30_000
#: How long ``remove`` waits for a deletion the service does in the background.
DELETE_WAIT = 30
#: The description's marker and the short keys of the labels it carries.
MARK = "sandbox-fleet"
_KEYS = {LABEL_FLEET: "f", LABEL_HOST: "h", LABEL_NAME: "n", LABEL_TYPE: "t",
         LABEL_SANDBOX_TYPE: "st", LABEL_SESSION: "s", LABEL_POOL: "p", LABEL_TIMEOUT: "to",
         LABEL_WORKSPACE_OWNED: "wo"}
_OPTIONAL = ("p", "s", "to", "wo", "st", "t")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,29}$")


# -- names and labels ---------------------------------------------------------------------------

def check_prefix(setting: str, prefix: str) -> str:
    """The resource name prefix (AGENT_RUN_PREFIX, FC_PREFIX), or SettingsError saying why not."""
    if not _PREFIX.match(prefix or "") or prefix.endswith("-"):
        raise SettingsError(f"{setting}={prefix!r}: expected a letter, then up to 29 letters, "
                            "digits or '-' (not at the end), so that sandbox names fit the "
                            f"service's {NAME_LIMIT}-character limit")
    return prefix


def resource_name(prefix: str, fleet_prefix: str, sandbox: str) -> str:
    """``<prefix>-<readable>-<10 hex of sha256(sandbox)>``, at most NAME_LIMIT characters of
    letters, digits and '-': the sandbox name without the fleet's prefix, lowercased, other
    characters as '-' and cut (names that differ only there stay apart by the digest)."""
    digest = hashlib.sha256(sandbox.encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", sandbox.removeprefix(fleet_prefix).lower()).strip("-")
    room = NAME_LIMIT - len(prefix) - len(digest) - 2
    readable = readable[:room].strip("-")
    return f"{prefix}-{readable}-{digest}" if readable else f"{prefix}-{digest}"


def is_resource_name(prefix: str, text: str) -> bool:
    return (len(text) <= NAME_LIMIT and text.startswith(prefix + "-")
            and bool(re.fullmatch(r"[a-z0-9-]+", text[len(prefix) + 1:])))


def description(spec: ContainerSpec) -> str:
    """The fleet's labels (those a listing and an adoption use) and the sandbox's port, as the
    resource's description. The secret is not among them: it is in the sandbox's environment."""
    carried = {short: spec.labels[label] for label, short in _KEYS.items() if label in spec.labels}
    carried.update({"v": 1, "port": spec.host_port})
    text = json.dumps({MARK: carried}, separators=(",", ":"))
    for short in _OPTIONAL:
        if len(text) <= DESCRIPTION_LIMIT:
            break
        carried.pop(short, None)
        text = json.dumps({MARK: carried}, separators=(",", ":"))
    if len(text) > DESCRIPTION_LIMIT:
        raise BadRequest(f"sandbox {spec.name}: its name, host and prefix are too long for the "
                         f"service's {DESCRIPTION_LIMIT}-character description")
    return text


def read_description(text: str | None) -> tuple[dict[str, str], int | None] | None:
    """(labels, port) of a resource the fleet made, or None for any other resource."""
    try:
        carried = json.loads(text or "")[MARK]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(carried, dict):
        return None
    labels = {label: str(carried[short]) for label, short in _KEYS.items() if short in carried}
    port = carried.get("port")
    return labels, port if isinstance(port, int) else None


def matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return labels.items() >= wanted.items()


def agent_url(url: str | None, what: str) -> str:
    """The agent's base URL exactly as the service gave it (scheme, host, port and path), without
    a trailing '/'; BackendError if the service gave none or something that is not a URL."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(f"{what}: the service gave no usable URL ({url!r})")
    return url.rstrip("/")


# -- sizes -------------------------------------------------------------------------------------

def instance_size(memory: str | None, cpus: float | None, default_mb: int,
                  default_cpus: float) -> tuple[int, float]:
    """(memory in MB, vCPUs) the service accepts for a sandbox: its limits (the defaults where it
    has none), rounded up to 64 MB and 0.05 vCPU steps, memory raised to at least 1 GB per vCPU
    and vCPUs to at least one per 4 GB (Function Compute's rules; AgentRun runs on it)."""
    mb = limits.size_bytes(memory, "memory") / 2 ** 20 if memory else default_mb
    cpu = cpus or default_cpus
    cpu = max(0.05, -(-round(cpu * 100) // 5) * 5 / 100)
    mb = max(int(-(-mb // 64) * 64), 128)
    mb = max(mb, int(-(-cpu * 1024 // 64) * 64))
    cpu = max(cpu, -(-round(mb / 4096 * 100) // 5) * 5 / 100)
    return mb, round(cpu, 2)


def default_limits(memory_mb: int, cpus: float) -> dict[str, str | float]:
    """A cloud backend's size for a sandbox whose type and create name none (the upstream
    settings AGENT_RUN_MEMORY/CPU, FC_MEMORY/CPU), in the fleet's notation."""
    return {"memory": f"{memory_mb}m", "cpu": cpus}


# -- the SDK -----------------------------------------------------------------------------------

def client_config(*, service: str, access_key_id: str | None, access_key_secret: str | None,
                  region: str, endpoint: str, protocol: str, variables: str) -> Any:
    """The SDK's configuration; SettingsError when the access key is missing."""
    from alibabacloud_tea_openapi import models as open_api_models

    require_keys(service, access_key_id, access_key_secret, variables)
    return open_api_models.Config(
        access_key_id=access_key_id, access_key_secret=access_key_secret, region_id=region,
        endpoint=endpoint, protocol=protocol, connect_timeout=CONNECT_TIMEOUT_MS,
        read_timeout=READ_TIMEOUT_MS)


def require_keys(service: str, key_id: str | None, secret: str | None, variables: str) -> None:
    if not key_id or not secret:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={service} needs {variables}_ACCESS_KEY_ID and "
                            f"{variables}_ACCESS_KEY_SECRET (docs/backends.md)")


class Api:
    """One service's SDK client, with its calls turned into the fleet's errors."""

    def __init__(self, client: Any, *, service: str, endpoint: str, variables: str) -> None:
        self.client = client
        self.service = service  # "AgentRun", "Function Compute"
        self.endpoint = endpoint
        self.variables = variables  # "AGENT_RUN", "FC"

    def call(self, what: str, method: Callable, *args: Any, missing_ok: bool = False) -> Any:
        """``method(*args)``; None when ``missing_ok`` and the service answers 404."""
        try:
            return method(*args)
        except Exception as e:  # the SDK raises plain Exception subclasses: translate them all
            if missing_ok and status_of(e) == 404 and not _credentials_refused(e):
                return None
            raise self.error(e, what) from e

    def error(self, error: Exception, what: str) -> SandboxError:
        status, code = status_of(error), getattr(error, "code", None) or ""
        message = getattr(error, "message", None) or str(error)
        if status is None:
            inner = getattr(error, "inner_exception", None) or error
            return Unavailable(f"cannot reach {self.service} at {self.endpoint} to {what}: "
                               f"{type(inner).__name__}: {inner}")
        if _credentials_refused(error):
            return BackendError(f"{self.service} rejected the fleet's credentials ({code}) to "
                                f"{what}: {message}. Check {self.variables}_ACCESS_KEY_ID and "
                                f"{self.variables}_ACCESS_KEY_SECRET")
        if status == 403:
            return BackendError(f"{self.service} does not let the fleet {what} ({code}): {message}. "
                                "Grant the account the policy in docs/backends.md")
        if status == 429 or status >= 500:
            return Unavailable(f"{self.service} could not {what} now (HTTP {status} {code}): "
                               f"{message}")
        return BackendError(f"{self.service} refused to {what} (HTTP {status} {code}): {message}")


def _credentials_refused(error: Exception) -> bool:
    code = getattr(error, "code", None) or ""
    return status_of(error) == 401 or code.startswith(
        ("InvalidAccessKeyId", "InvalidAccessKeyID", "SignatureNotMatch", "SignatureDoesNotMatch"))


def status_of(error: Exception) -> int | None:
    """The HTTP status of an SDK error, or None where no answer came (a network failure)."""
    status = getattr(error, "status_code", None) or getattr(error, "statusCode", None)
    return int(status) if status else None


def wait(check: Callable[[], Any], deadline: float, timeout_message: Callable[[], str]) -> Any:
    """Poll ``check`` (every 0.2 s, then at most every 2 s) until it returns something truthy,
    which is returned; Unavailable with ``timeout_message()`` at the deadline. ``check`` raises
    to stop early (a resource that failed)."""
    value = polling.poll(check, max(0.0, deadline - time.monotonic()), first=0.2, most=2.0)
    if not value:
        raise Unavailable(timeout_message())
    return value


def cleanup_after_failure(sandbox: str, delete: Callable[[], None]) -> None:
    """Delete what a failed create made; its own failure is logged (reconcile removes the rest
    later by name prefix), as the create's error is the news."""
    try:
        delete()
    except SandboxError as e:
        log.error("sandbox %s: could not remove what the failed create made: %s", sandbox, e.detail)


# -- what a cloud sandbox cannot be -------------------------------------------------------------

def check_spec(spec: ContainerSpec, service: str) -> None:
    """BadRequest for what the service cannot give a sandbox (nothing is made then)."""
    if spec.readonly_mounts:
        raise BadRequest(f"sandbox {spec.name}: {service} sandboxes cannot mount host folders "
                         "(read-only mounts)")
    if spec.egress == "none":
        raise BadRequest(f"sandbox {spec.name}: {service} cannot keep a sandbox off the network; "
                         "a type with egress='none' cannot run on it")


def failure(spec: ContainerSpec, service: str, what: str, reason: str | None) -> SandboxError:
    """A sandbox's resource that failed to start: a 400 naming the image if that is why (the
    service could not pull it), else a 502."""
    reason = reason or "no reason given"
    if "image" in reason.lower():
        return BadRequest(f"image {spec.image} cannot be used by {service} ({what}: {reason}); "
                          "build it with `runtime-sandbox-builder`, push it to a registry the "
                          "service pulls from and set RUNTIME_SANDBOX_REGISTRY")
    return BackendError(f"sandbox {spec.name}: {service} could not start it ({what}: {reason})")


# -- the backends' common part -------------------------------------------------------------------

class CloudBackend(Backend):
    """Create and remove as both services need them: a sandbox's resources are made under one
    deadline (FLEET_CREATE_TIMEOUT), and any failure, timeout or the job's own limit deletes all
    of them before the error goes on. Subclasses make (``_make``) and delete (``_delete``)."""

    service = ""  # "AgentRun", "Function Compute"
    deployment = ""  # the CONTAINER_DEPLOYMENT value
    prefix_setting = ""  # AGENT_RUN_PREFIX, FC_PREFIX

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self.check_settings(settings)
        self.prefix = getattr(settings, self.prefix_setting)

    @classmethod
    def check_settings(cls, settings: Any) -> None:
        check_prefix(cls.prefix_setting, getattr(settings, cls.prefix_setting))
        if settings.READONLY_MOUNTS:
            raise SettingsError(f"READONLY_MOUNTS are host folders, which a {cls.service} "
                                f"sandbox cannot mount; remove them for "
                                f"CONTAINER_DEPLOYMENT={cls.deployment}")

    @property
    def workspace_on_host(self) -> bool:
        return False  # the sandbox's own disk, on the service

    def check_access(self, list_one: Callable[[], Any]) -> None:
        """The credentials and the endpoint, checked once at start (SettingsError if refused)."""
        try:
            list_one()
        except SandboxError as e:
            raise SettingsError(f"CONTAINER_DEPLOYMENT={self.deployment}: {e.detail}") from e

    def create(self, spec: ContainerSpec) -> Container:
        name = self._name(spec.name)
        check_spec(spec, self.service)
        deadline = time.monotonic() + self.settings.FLEET_CREATE_TIMEOUT
        try:
            url = self._make(name, spec, deadline)
        except BaseException:  # a failure, a timeout or the job's own limit: leave nothing
            cleanup_after_failure(spec.name, lambda: self._delete(name, spec.name))
            raise
        log.info("sandbox %s: %s resource %s ready, agent at %s", spec.name, self.service, name, url)
        return Container(id=name, name=spec.name, status="running", labels=spec.labels,
                         image=spec.image, environment=dict(spec.environment),
                         host_port=spec.host_port, url=url)

    def remove(self, container_id: str) -> None:
        for name in self._candidates(container_id):
            self._delete(name, container_id)

    def _make(self, name: str, spec: ContainerSpec, deadline: float) -> str:
        """Make the sandbox's resources, ready by ``deadline``; returns its agent's URL."""
        raise NotImplementedError

    def _delete(self, name: str, sandbox: str) -> None:
        """Delete every resource of that name (gone already is fine)."""
        raise NotImplementedError

    def _name(self, sandbox: str) -> str:
        return resource_name(self.prefix, self.settings.CONTAINER_PREFIX_KEY, sandbox)

    def _candidates(self, container_id: str) -> list[str]:
        """Resource names a container id may stand for: the one derived from a sandbox name, and
        the id itself where it already is one (create returns resource names as ids)."""
        names = [self._name(container_id)]
        if is_resource_name(self.prefix, container_id):
            names.insert(0, container_id)
        return names
