"""Memory, CPU and workspace limits of a sandbox: each type's defaults, a create's own, the caps.

A sandbox gets, in this order of precedence: the ``resource_limits`` of its ``/create`` body (memory
and cpu only, each at most ``FLEET_MAX_SANDBOX_MEMORY`` / ``FLEET_MAX_SANDBOX_CPUS``, so a client
cannot take the host), its type's ``resource_limits`` (the operator's own, not capped), then the
built-in defaults below. ``"0"`` in a type's limits means unlimited.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import BadRequest

#: Why these figures (docs/types/): an idle base sandbox is ~10 MiB and an IPython kernel with
#: pandas-sized data fits well in 1 GiB; Chromium (browser, and whatever a desktop user opens in
#: gui) is ~330 MiB on about:blank and 100-300 MiB more per open page, with several processes.
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "base": {"memory": "1g", "cpu": 1.0},
    "filesystem": {"memory": "1g", "cpu": 1.0},
    "browser": {"memory": "2g", "cpu": 2.0},
    "gui": {"memory": "2g", "cpu": 2.0},
}
#: A type that names no limit (an extension's) gets the base sandbox's.
OTHER_TYPES = TYPE_DEFAULTS["base"]
#: Below this an agent and a shell cannot both run; Docker itself refuses less than 6 MiB.
MIN_MEMORY = 32 << 20

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def size_bytes(value: Any, what: str) -> int:
    """Docker's size notation ("512m", "2g", "1.5G", "1024", 1024) in bytes; ValueError says why."""
    match = _SIZE.match(str(value)) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"{what} must be a size such as '512m' or '2g' (got {value!r})")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def cpu_count(value: Any, what: str) -> float:
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of CPUs such as 0.5 or 2 (got {value!r})") from None
    if isinstance(value, bool) or not math.isfinite(cpus) or cpus < 0:
        raise ValueError(f"{what} must be a positive number of CPUs (got {value!r})")
    return cpus


def human(size: int) -> str:
    """536870912 -> "512m": how sizes are written in records and messages."""
    for unit in ("t", "g", "m", "k"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def requested(settings, limits: dict | None) -> dict[str, str]:
    """A /create body's ``resource_limits``, checked against the caps: {"memory": .., "cpu": ..}
    as text (record fields), or BadRequest naming what is wrong."""
    if not limits:
        return {}
    unknown = sorted(set(limits) - {"memory", "cpu"})
    if unknown:
        raise BadRequest(f"resource_limits: unknown key(s) {unknown}; allowed: memory, cpu")
    out: dict[str, str] = {}
    try:
        if limits.get("memory") is not None:
            memory = size_bytes(limits["memory"], "resource_limits.memory")
            cap = size_bytes(settings.FLEET_MAX_SANDBOX_MEMORY, "FLEET_MAX_SANDBOX_MEMORY")
            if not MIN_MEMORY <= memory <= cap:
                raise ValueError(f"resource_limits.memory must be from {human(MIN_MEMORY)} to "
                                 f"{human(cap)} (FLEET_MAX_SANDBOX_MEMORY); got {limits['memory']!r}")
            out["memory"] = human(memory)
        if limits.get("cpu") is not None:
            cpus = cpu_count(limits["cpu"], "resource_limits.cpu")
            if not 0 < cpus <= settings.FLEET_MAX_SANDBOX_CPUS:
                raise ValueError(f"resource_limits.cpu must be above 0 and at most "
                                 f"{settings.FLEET_MAX_SANDBOX_CPUS:g} (FLEET_MAX_SANDBOX_CPUS); "
                                 f"got {limits['cpu']!r}")
            out["cpu"] = f"{cpus:g}"
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return out


def effective(sandbox_type: str, type_limits: dict, record: dict,
              defaults: dict | None = None) -> tuple[str | None, float | None]:
    """(memory, cpus) a sandbox starts with: the create's own, else its type's, else the default
    (``defaults``, a backend's own, else the type's below). None means unlimited (a type that
    says "0")."""
    defaults = defaults or TYPE_DEFAULTS.get(sandbox_type, OTHER_TYPES)
    memory = record.get("memory") or type_limits.get("memory", defaults["memory"])
    cpus = record.get("cpus") or type_limits.get("cpu", defaults["cpu"])
    memory = size_bytes(memory, f"{sandbox_type} resource_limits.memory") if memory else 0
    cpus = cpu_count(cpus, f"{sandbox_type} resource_limits.cpu") if cpus else 0.0
    return (human(memory) if memory else None), (cpus or None)


def check_type(name: str, limits: dict) -> None:
    """A registered type's limits, parsed once at registration so a typo stops start-up."""
    if limits.get("memory") not in (None, "", 0, "0"):
        size_bytes(limits["memory"], f"{name}: resource_limits.memory")
    if limits.get("cpu") not in (None, ""):
        cpu_count(limits["cpu"], f"{name}: resource_limits.cpu")
    if limits.get("workspace") not in (None, "", 0, "0"):
        size_bytes(limits["workspace"], f"{name}: resource_limits.workspace")


def workspace_quota(settings, type_limits: dict) -> int:
    """Bytes the type's /workspace may hold (its own ``workspace`` limit, else
    FLEET_WORKSPACE_QUOTA); 0 = no quota."""
    value = type_limits.get("workspace") or settings.FLEET_WORKSPACE_QUOTA
    return size_bytes(value, "workspace quota") if value not in (0, "0") else 0


def container_limits(settings, spec, record: dict, defaults: dict | None = None) -> dict[str, Any]:
    """The ContainerSpec fields (memory, cpus, workspace_quota) of a sandbox about to start;
    ``defaults``: the backend's own size where it has one (Backend.default_limits)."""
    memory, cpus = effective(spec.sandbox_type, spec.resource_limits, record, defaults)
    return {"memory": memory, "cpus": cpus,
            "workspace_quota": workspace_quota(settings, spec.resource_limits)}
