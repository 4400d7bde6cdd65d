"""Isolation backends behind one interface, chosen by CONTAINER_DEPLOYMENT.

Each name maps to ``module:Class``; the module is imported only when chosen, so a missing
dependency of an unused backend never matters (fsspec's ``known_implementations``).
"""

from __future__ import annotations

import importlib

from sandbox_core.errors import SettingsError
from sandbox_core.settings import TEST_DEPLOYMENTS, Settings

from .base import Backend, Container, ContainerSpec

KNOWN_BACKENDS = {
    "docker": ("backends.docker:DockerBackend", None),
    "gvisor": ("backends.docker:GVisorBackend", None),
    "boxlite": ("backends.boxlite:BoxLiteBackend", None),
    "k8s": ("backends.k8s:K8sBackend", None),
    "agentrun": ("backends.agentrun:AgentRunBackend", None),
    "fc": ("backends.fc:FCBackend", None),
    "cloud": (None, "CONTAINER_DEPLOYMENT=cloud is not a backend (upstream rejects it too)"),
}

#: The setup.cfg extra that brings a backend's dependencies.
_EXTRAS = {"boxlite": "boxlite", "k8s": "k8s", "agentrun": "cloud", "fc": "cloud"}

#: Backends that code registered (the test suite's local-process one), never chosen by a name
#: alone: see ``register_backend``.
_REGISTERED: dict[str, type[Backend]] = {}

__all__ = ["Backend", "Container", "ContainerSpec", "backend_class", "create_backend",
           "register_backend"]


def register_backend(name: str, cls: type[Backend]) -> None:
    """Make ``CONTAINER_DEPLOYMENT=name`` build ``cls`` in this process. Only code calls it (the
    test suite's extension tests/doubles/local_process_backend.py); a user's settings cannot."""
    if name in KNOWN_BACKENDS:
        raise ValueError(f"backend {name!r} is built in; register another name")
    _REGISTERED[name] = cls


def backend_class(name: str) -> type[Backend]:
    """The class for a CONTAINER_DEPLOYMENT value, or SettingsError saying why it cannot run."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in TEST_DEPLOYMENTS:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name} is the test suite's own backend; only "
                            "the tests load it (tests/doubles)")
    if name not in KNOWN_BACKENDS:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name!r}: expected one of {', '.join(KNOWN_BACKENDS)}")
    target, missing = KNOWN_BACKENDS[name]
    if target is None:
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name}: {missing}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        extra = _EXTRAS.get(name)
        hint = f"pip install 'sandbox-fleet[{extra}]'" if extra else "pip install it"
        raise SettingsError(f"CONTAINER_DEPLOYMENT={name} needs {e.name}: {hint}") from e
    return getattr(module, class_name)


def create_backend(settings: Settings) -> Backend:
    return backend_class(settings.CONTAINER_DEPLOYMENT)(settings)
