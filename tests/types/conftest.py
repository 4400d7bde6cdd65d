"""Fixtures for the sandbox types: a fleet pooling one type, run with the SDK's own classes.

A type's tests skip, saying which image to build, when that image is not on this host; under CI
(or SANDBOX_FLEET_REQUIRE_DOCKER=1) a missing image is a failure, as a missing base image is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox_core.settings import parse_settings
from tests.conftest import skip_or_fail

#: Upstream's listings (shared/reference, wire-contract §3), kept beside the tests.
REFERENCE = Path(__file__).resolve().parent / "reference"


def image_of(sandbox_type: str) -> str:
    return parse_settings({}).image_uri(f"runtime-sandbox-{sandbox_type}")


def require_image(docker_client, sandbox_type: str) -> str:
    import docker

    image = image_of(sandbox_type)
    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        reason = f"{image} is not built: run `runtime-sandbox-builder {sandbox_type}`"
        skip_or_fail(reason)
    return image


@pytest.fixture
def type_fleet(make_fleet, docker_client):
    """``type_fleet("filesystem")``: a fleet whose pooled type is that one (POOL_SIZE=0)."""

    def start(sandbox_type: str, **settings):
        require_image(docker_client, sandbox_type)
        return make_fleet(DEFAULT_SANDBOX_TYPE=sandbox_type, POOL_SIZE=0, **settings)

    return start


def reference_tools(name: str) -> dict:
    return json.loads((REFERENCE / f"list_tools_{name}.json").read_text())


def assert_same_tools(listed: dict, reference: dict) -> None:
    """Tool by tool, so a failure names the tool that differs."""
    assert sorted(listed) == sorted(reference)
    for name, tool in reference.items():
        assert listed[name] == tool, f"tool {name} differs from upstream's"


def texts(result: dict, kind: str = "text") -> list[str]:
    return [c.get("text", "") for c in result["content"] if c.get("type") == kind]
