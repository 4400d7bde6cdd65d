"""A fleet that serves the E2B API, and the real e2b SDKs pointed at it (docs/e2b.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_DOCKER, running_fleet

CODE_IMAGE = "agentscope/runtime-sandbox-code-interpreter:latest"


@pytest.fixture(scope="module")
def e2b_fleet(tmp_path_factory, docker_client):
    """One fleet per module, pooling base and code-interpreter sandboxes, with the three
    environment variables a user sets (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY)."""
    require_image(docker_client, CODE_IMAGE, "code-interpreter")
    with running_fleet(tmp_path_factory.mktemp("e2b"), docker_client, POOL_SIZE=1,
                       DEFAULT_SANDBOX_TYPE="base,code-interpreter",
                       # reconcile often, so a paused sandbox meets it (it must survive it)
                       FLEET_RECONCILE_INTERVAL=1) as fleet, sdk_pointed_at(fleet):
        yield fleet


def require_image(docker_client, image: str, build_type: str) -> None:
    """Skip (fail under CI) when a type's image has not been built."""
    try:
        docker_client.images.get(image)
    except Exception as e:  # the reason is what the skip says
        if REQUIRE_DOCKER:
            pytest.fail(f"{image} is missing: {e}")
        pytest.skip(f"{image} is missing (runtime-sandbox-builder {build_type})")


@contextlib.contextmanager
def sdk_pointed_at(fleet) -> Iterator[None]:
    """The three variables a user sets, for the block."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("E2B_API_URL", fleet.url)
        env.setenv("E2B_SANDBOX_URL", fleet.url)
        env.setenv("E2B_API_KEY", fleet.token)
        env.delenv("E2B_DOMAIN", raising=False)
        env.delenv("E2B_DEBUG", raising=False)
        yield
