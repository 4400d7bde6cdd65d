"""A custom type from the upstream guide's example: built with runtime-sandbox-builder, loaded with
--extension (file and module forms), pooled, and called with the SDK."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import texts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")

#: The guide's custom_sandbox.py (written for agentscope-runtime, importing its registry), with its
#: own timeout (45 s instead of the default 60, so the test can tell it was taken).
UPSTREAM_EXTENSION = '''
import os

from typing import Optional

from agentscope_runtime.sandbox.utils import build_image_uri
from agentscope_runtime.sandbox.registry import SandboxRegistry
from agentscope_runtime.sandbox.enums import SandboxType
from agentscope_runtime.sandbox.box.sandbox import Sandbox

SANDBOXTYPE = "my_custom_sandbox"


@SandboxRegistry.register(
    build_image_uri(f"runtime-sandbox-{SANDBOXTYPE}"),
    sandbox_type=SANDBOXTYPE,
    security_level="medium",
    timeout=45,
    description="my sandbox",
    environment={
        "TAVILY_API_KEY": os.getenv("TAVILY_API_KEY", ""),
        "AMAP_MAPS_API_KEY": os.getenv("AMAP_MAPS_API_KEY", ""),
    },
)
class MyCustomSandbox(Sandbox):
    def __init__(
        self,
        sandbox_id: Optional[str] = None,
        timeout: int = 3000,
        base_url: Optional[str] = None,
        bearer_token: Optional[str] = None,
    ):
        super().__init__(
            sandbox_id,
            timeout,
            base_url,
            bearer_token,
            SandboxType(SANDBOXTYPE),
        )
'''

#: The same kind of type written against sandbox-fleet's registry, loaded as a module.
FLEET_EXTENSION = '''
from sandbox_core.registry import SandboxRegistry, build_image_uri


@SandboxRegistry.register(build_image_uri("runtime-sandbox-my_custom_sandbox"),
                          sandbox_type="my_fleet_sandbox", timeout=30,
                          environment={"GREETING": "hello from the registry"},
                          resource_limits={"memory": "256m", "cpu": 0.5})
class MyFleetSandbox:
    pass
'''

DOCKERFILE = '''
ARG BASE_IMAGE=agentscope/runtime-sandbox-base:latest
FROM ${BASE_IMAGE}
RUN echo "built for the custom type" > /etc/custom-sandbox
LABEL io.sandbox-fleet.capabilities=""
'''

IMAGE = "agentscope/runtime-sandbox-my_custom_sandbox:latest"


@pytest.fixture
def custom_image(tmp_path, docker_client):
    """The guide's flow: the extension file and a Dockerfile, built by the builder."""
    (tmp_path / "custom_sandbox.py").write_text(UPSTREAM_EXTENSION)
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(DOCKERFILE))
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "fleet_custom_ext.py").write_text(FLEET_EXTENSION)
    built = subprocess.run(
        [sys.executable, "-m", "sandbox_cli.builder", "my_custom_sandbox",
         "--dockerfile_path", "Dockerfile", "--extension", "custom_sandbox.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    assert built.stdout.strip().splitlines()[-1] == IMAGE
    yield tmp_path
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)


def test_upstream_guide_custom_type_is_built_pooled_and_called(custom_image, make_fleet,
                                                               monkeypatch):
    monkeypatch.setenv("TAVILY_API_KEY", "tvly-test-key")
    monkeypatch.setenv("PYTHONPATH", str(custom_image / "modules"))
    fleet = make_fleet(extensions=(str(custom_image / "custom_sandbox.py"), "fleet_custom_ext"),
                       DEFAULT_SANDBOX_TYPE="my_custom_sandbox,my_fleet_sandbox", POOL_SIZE=1)
    fleet.wait_for(lambda: all(p["warm"] == 1 for p in fleet.get("fleet/status").json()["pools"]
                               .values()), timeout=90, what="both custom pools warm")

    # The client side registers the type with the SDK the same way, by importing the extension.
    sys.path.insert(0, str(custom_image))
    try:
        import custom_sandbox  # noqa: F401
    finally:
        sys.path.remove(str(custom_image))
    from agentscope_runtime.sandbox.enums import SandboxType

    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token,
                             sandbox_type=SandboxType("my_custom_sandbox")) as sb:
        info = sb.get_info()
        assert info["sandbox_type"] == "my_custom_sandbox" and info["version"] == IMAGE
        assert info["timeout"] == 45  # the type's own timeout
        out = sb.run_shell_command(command="cat /etc/custom-sandbox; echo \"key=$TAVILY_API_KEY\"")
        assert "".join(texts(out)).startswith("built for the custom type\nkey=tvly-test-key\n")

    name = fleet.data("create_from_pool", {"sandbox_type": "my_fleet_sandbox"}, allow_null=False)
    try:
        info = fleet.data("get_info", {"identity": name})
        assert info["timeout"] == 30 and info["version"] == IMAGE
        out = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                       "arguments": {"command": "echo $GREETING"}})
        assert texts(out)[0] == "hello from the registry\n"
    finally:
        fleet.data("release", {"identity": name})
