"""The sandbox types the fleet can create: built-in ones and those extensions register.

An extension module calls ``SandboxRegistry.register(...)`` exactly as it would with agentscope-runtime::

    @SandboxRegistry.register(build_image_uri("runtime-sandbox-mine"), sandbox_type="mine",
                              timeout=60, environment={"API_KEY": "..."})
    class MySandbox: ...

and ``runtime-sandbox-server --extension my_module.py`` loads it in the API and in every worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits
from .errors import BadRequest, SettingsError
from .settings import Settings

log = logging.getLogger(__name__)

#: Types whose image is ``runtime-sandbox-<type>`` under the configured registry/namespace/tag.
#: (upstream's "mobile" is not here: it has no image yet, so asking for it is an unknown type.)
BUILTIN_TYPES = ("base", "filesystem", "browser", "gui", "code-interpreter")
#: "open": the public internet only; "lan": also private, link-local (cloud metadata) and other
#: non-public ranges; "none": nothing off the host (backends/egress.py).
EGRESS = ("open", "lan", "none")
#: The SDK's async classes ask for ``<type>_async``; they are the same sandbox.
ASYNC_SUFFIX = "_async"


@dataclass(frozen=True)
class SandboxSpec:
    """What the fleet needs to start one type of sandbox."""

    sandbox_type: str
    image: str
    timeout: int = 60
    resource_limits: dict[str, Any] = field(default_factory=dict)
    security_level: str = "medium"
    description: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)
    #: "open" (the default): public internet only; "lan": every address, as upstream; "none":
    #: no connection off the host.
    egress: str = "open"
    #: With egress "open": non-public networks (CIDRs) the type's sandboxes may reach as well.
    egress_allow: tuple[str, ...] = ()


class SandboxRegistry:
    """Custom types registered by extensions (upstream's class name and signature)."""

    _custom: dict[str, SandboxSpec] = {}
    _settings: Settings | None = None

    @classmethod
    def register(
        cls,
        image_name: str,
        sandbox_type: Any = None,
        resource_limits: dict | None = None,
        security_level: str = "medium",
        timeout: int = 60,
        description: str = "",
        environment: dict | None = None,
        runtime_config: dict | None = None,
        egress: str = "open",
        egress_allow: Iterable[str] = (),
    ):
        """Register a type; usable as a class decorator (upstream) or called on its own.

        ``egress`` and ``egress_allow`` are sandbox-fleet's own: by default (``"open"``) the type's
        sandboxes reach the public internet only; ``egress_allow=["10.1.0.0/16"]`` adds non-public
        networks, ``"lan"`` allows every address (upstream's behaviour) and ``"none"`` keeps them
        from opening any connection off their host (their tools still answer through the fleet).
        ``resource_limits`` takes ``memory`` ("2g"), ``cpu`` (1.5) and sandbox-fleet's
        ``workspace`` (the /workspace quota, "20g"); "0" means unlimited."""
        name = str(getattr(sandbox_type, "value", sandbox_type) or "").strip()
        if not name:
            raise SettingsError(f"SandboxRegistry.register({image_name!r}): sandbox_type is required")
        if egress not in EGRESS:
            raise SettingsError(f"SandboxRegistry.register({name!r}): egress must be one of {EGRESS}")
        try:
            allow = normalize_cidrs(egress_allow)
            limits.check_type(name, dict(resource_limits or {}))
        except ValueError as e:
            raise SettingsError(f"SandboxRegistry.register({name!r}): {e}") from None
        if allow and egress != "open":
            raise SettingsError(f"SandboxRegistry.register({name!r}): egress_allow needs egress='open'")
        spec = SandboxSpec(
            sandbox_type=name,
            image=image_name,
            timeout=int(timeout),
            resource_limits=dict(resource_limits or {}),
            security_level=security_level,
            description=description,
            environment={k: str(v) for k, v in (environment or {}).items() if v is not None},
            runtime_config=dict(runtime_config or {}),
            egress=egress,
            egress_allow=allow,
        )
        cls._custom[name] = spec
        log.info("registered sandbox type %s (image %s)", name, image_name)

        def decorator(target):
            return target

        return decorator

    @classmethod
    def clear(cls) -> None:
        cls._custom.clear()


def normalize_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """IPv4 networks as ``10.1.0.0/16``, sorted and unique; ValueError names a bad one."""
    if isinstance(cidrs, str):
        cidrs = [cidrs]
    networks = set()
    for cidr in cidrs:
        try:
            networks.add(ipaddress.IPv4Network(str(cidr).strip(), strict=False))
        except ValueError:
            raise ValueError(f"egress_allow: {cidr!r} is not an IPv4 network such as 10.1.0.0/16") \
                from None
    return tuple(str(n) for n in sorted(networks))


def build_image_uri(image_name: str, tag: str | None = None) -> str:
    """The image reference for ``image_name`` under the fleet's registry, namespace and tag."""
    settings = SandboxRegistry._settings or Settings()
    uri = settings.image_uri(image_name)
    return uri.rsplit(":", 1)[0] + f":{tag}" if tag else uri


def base_type(sandbox_type: str) -> str:
    """``base_async`` -> ``base``: the async SDK classes use the same sandboxes and pools."""
    if sandbox_type.endswith(ASYNC_SUFFIX):
        return sandbox_type[: -len(ASYNC_SUFFIX)]
    return sandbox_type


def get_spec(settings: Settings, sandbox_type: str) -> SandboxSpec:
    """The spec of a type, or BadRequest listing the known types."""
    name = base_type(sandbox_type)
    if name in SandboxRegistry._custom:
        return SandboxRegistry._custom[name]
    if name in BUILTIN_TYPES:
        return SandboxSpec(
            sandbox_type=name,
            image=settings.image_uri(f"runtime-sandbox-{name}"),
            timeout=settings.RUNTIME_SANDBOX_TIMEOUT,
            description=f"built-in {name} sandbox",
        )
    raise BadRequest(f"unknown sandbox_type {sandbox_type!r}; known types: {', '.join(known_types())}")


def known_types() -> list[str]:
    return [*BUILTIN_TYPES, *sorted(SandboxRegistry._custom)]


def load_extensions(settings: Settings, extensions: Iterable[str]) -> None:
    """Import each extension (a .py file or a module name) so it registers its types."""
    SandboxRegistry._settings = settings
    for ext in extensions:
        try:
            if ext.endswith(".py") or Path(ext).is_file():
                path = Path(ext).resolve()
                if not path.is_file():
                    raise SettingsError(f"--extension {ext}: no such file")
                module_name = f"sandbox_fleet_extension_{path.stem}"
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(ext)
        except SettingsError:
            raise
        except Exception as e:  # an extension is user code: say which one failed and why
            raise SettingsError(f"--extension {ext} failed to load: {type(e).__name__}: {e}") from e
        _adopt_agentscope_types()
    for name in settings.DEFAULT_SANDBOX_TYPE:
        try:
            get_spec(settings, name)
        except BadRequest as e:  # a pooled type nobody registered stops start-up
            raise SettingsError(f"DEFAULT_SANDBOX_TYPE: {e.detail}") from None


def _adopt_agentscope_types() -> None:
    """Take in the types an extension registered with agentscope-runtime's own registry.

    An extension written for agentscope-runtime imports ``agentscope_runtime.sandbox.registry``
    and registers there; when it has (the module is loaded), each type whose class the extension
    defined (not agentscope-runtime's own) becomes a SandboxSpec here. Nothing is imported when no
    extension used that package.
    """
    upstream = sys.modules.get("agentscope_runtime.sandbox.registry")
    if upstream is None:
        return
    for sandbox_type, target in list(getattr(upstream.SandboxRegistry, "_type_registry", {}).items()):
        name = str(getattr(sandbox_type, "value", sandbox_type))
        if getattr(target, "__module__", "").startswith("agentscope_runtime.") or \
                base_type(name) in BUILTIN_TYPES or name in SandboxRegistry._custom:
            continue
        config = upstream.SandboxRegistry.get_config_by_type(sandbox_type)
        if config is None:
            continue
        limits = dict(config.resource_limits or {})
        runtime_config = dict(config.runtime_config or {})
        if "memory" in limits:  # derived by SandboxConfig from resource_limits; we derive it too
            runtime_config.pop("mem_limit", None)
        if "cpu" in limits:
            runtime_config.pop("nano_cpus", None)
        SandboxRegistry.register(config.image_name, sandbox_type=name, resource_limits=limits,
                                 security_level=config.security_level, timeout=config.timeout,
                                 description=config.description, environment=config.environment,
                                 runtime_config=runtime_config)
