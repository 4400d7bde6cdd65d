"""The part of docker-py's client the fleet tests use, over the local-process backend's sandboxes.

The fleet tests look at a fleet's sandboxes through a ``docker_client`` fixture
(``fleet.containers(docker_client)``, ``docker_client.containers.get(name).top()``, ``.kill()``,
``.remove(force=True)``, ``containers.run(...)`` for a stray one, ``events(...)`` to count
every start). Under tests/local/ that
fixture is a ``LocalEngineForTests``, so the same test functions run there without Docker.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

from backends.base import Container, ContainerSpec
from sandbox_core.settings import parse_settings
from tests.localfleet import free_port

from .local_process_backend import EVENTS, LocalProcessBackendForTests


@dataclass
class LocalContainerForTests:
    backend: LocalProcessBackendForTests
    container: Container

    @property
    def id(self) -> str:
        return self.container.id

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def status(self) -> str:
        return self.backend.status(self.id) or "removed"

    @property
    def labels(self) -> dict[str, str]:
        return self.container.labels

    def top(self) -> dict:
        return {"Titles": ["CMD"], "Processes": [[c] for c in self.backend.processes(self.id)]}

    def kill(self) -> None:
        self.backend.stop(self.id, timeout=0)

    def remove(self, force: bool = False) -> None:
        self.backend.remove(self.id)


class LocalContainersForTests:
    def __init__(self, backend: LocalProcessBackendForTests) -> None:
        self.backend = backend

    def list(self, all: bool = False, filters: dict | None = None) -> list[LocalContainerForTests]:
        """As Docker's ``name`` (contained in the name) and ``label`` (``k=v``) filters."""
        part = (filters or {}).get("name", "")
        labels = (filters or {}).get("label", [])
        labels = [labels] if isinstance(labels, str) else labels
        found = [c for c in self.backend.list(dict(item.split("=", 1) for item in labels))
                 if part in c.name]
        return [LocalContainerForTests(self.backend, c) for c in found
                if all or c.status == "running"]

    def get(self, name: str) -> LocalContainerForTests:
        container = self.backend.inspect(name)
        if container is None:
            raise LookupError(f"no local sandbox {name}")
        return LocalContainerForTests(self.backend, container)

    def run(self, image: str, name: str, labels: dict[str, str] | None = None,
            environment: dict[str, str] | None = None, detach: bool = True) -> LocalContainerForTests:
        spec = ContainerSpec(name=name, image=image, host_port=free_port(),
                             environment=dict(environment or {}), labels=dict(labels or {}))
        return LocalContainerForTests(self.backend, self.backend.create(spec))


class LocalEngineForTests:
    """One per machine, as a Docker engine: it sees every fleet's local sandboxes."""

    def __init__(self) -> None:
        self.backend = LocalProcessBackendForTests(parse_settings({}))
        self.containers = LocalContainersForTests(self.backend)

    def events(self, since: float = 0, until: float | None = None, filters: dict | None = None,
               decode: bool = True) -> list[dict]:
        """As ``docker events --since --until --filter``: the recorded events in that span."""
        wanted = {k: v for k, v in (filters or {}).items() if k in ("type", "event")}
        found = []
        with contextlib.suppress(FileNotFoundError), open(self.backend.root / EVENTS) as f:
            for line in f:
                event = json.loads(line)
                if event["time"] < since or (until is not None and event["time"] > until):
                    continue
                if wanted.get("type", "container") == event["Type"] and \
                        wanted.get("event", event["Action"]) == event["Action"]:
                    found.append(event)
        return found

    def close(self) -> None:
        self.backend.close()
