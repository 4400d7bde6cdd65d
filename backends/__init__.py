"""Isolation backends behind one interface, chosen by CONTAINER_DEPLOYMENT.

Each name maps to ``module:Class``; the module is imported only when chosen, so a missing
dependency of an unused backend never matters (fsspec's ``known_implementations``).
"""

from __future__ import annotations

import importlib

from sandbox_core.errors import SettingsError
from sandbox_core.settings import Settings

from .base import Backend, Container, ContainerSpec

KNOWN_BACKENDS = {
    "docker": ("backends.docker:DockerBackend", None),
    "gvisor": ("backends.docker:GVisorBackend", None),
    "boxlite": ("backends.boxlite:BoxLiteBackend", None),
    "k8s": (None, "the Kubernetes backend is not built yet (planned, see docs/backends.md)"),
    "agentrun": (None, "the AgentRun cloud backend is not built yet"),
    "fc": (None, "the Function Compute cloud backend is not built yet"),
    "cloud": (None, "CONTAINER_DEPLOYMENT=cloud is not a backend (upstream rejects it too)"),
}

__all__ = ["Backend", "Container", "ContainerSpec", "backend_class", "create_backend"]


def backend_class(name: str) -> type[Backend]:
    """The class for a CONTAINER_DEPLOYMENT value, or SettingsError saying why it cannot run."""
    if name not in KNOWN_BACKENDS:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name!r}: expected one of {', '.join(KNOWN_BACKENDS)}")
    target, missing = KNOWN_BACKENDS[name]
    if target is None:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name}: {missing}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name} needs {e.name}: pip install it") from e
    return getattr(module, class_name)


def create_backend(settings: Settings) -> Backend:
    return backend_class(settings.CONTAINER_DEPLOYMENT)(settings)
