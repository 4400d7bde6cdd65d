"""The Docker-free tier: whole fleets (runtime-sandbox-server, gunicorn, Celery workers and beat,
Redis) whose sandboxes are local agent processes (tests/doubles/local_process_backend.py).

The fleet tests' own functions run here unchanged: each module imports a representative set from
tests/fleet/ and these fixtures replace the Docker ones: ``make_fleet`` starts fleets on the
local-process backend, and ``docker_client`` (the name those tests give the engine that runs the
sandboxes) is the local engine. ``pytest -m "not docker"`` runs this tier with redis-server alone.
"""

from __future__ import annotations

import pytest

from tests.conftest import SLOW_IMAGE, fleet_factory
from tests.doubles import local_process_backend
from tests.doubles.local_engine import LocalEngineForTests

EXTENSION = local_process_backend.__file__


@pytest.fixture(scope="session")
def docker_client():
    engine = LocalEngineForTests()
    yield engine
    engine.close()


@pytest.fixture
def make_fleet(tmp_path, docker_client):
    with fleet_factory(tmp_path, docker_client, (EXTENSION,),
                       CONTAINER_DEPLOYMENT=local_process_backend.NAME) as make:
        yield make


@pytest.fixture(scope="module")
def slow_image():
    """The crash tests' image whose agent starts 8 s late: the local backend knows it by name."""
    return SLOW_IMAGE
