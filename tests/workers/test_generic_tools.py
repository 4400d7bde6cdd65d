"""The "generic" tool group the worker adds to every listing: the same as upstream's SDK declares,
and each tool callable through a real agent with the parameter its schema requires."""

from __future__ import annotations

import pytest

from sandbox_workers.agent_client import GENERIC_TOOLS, AgentClient
from tests.agent.conftest import TOKEN, Agent


def test_generic_group_is_the_one_upstreams_sdk_declares():
    """Compared with the installed agentscope-runtime SDK's own definition (the wire contract),
    not with a copy kept in this file."""
    base = pytest.importorskip("agentscope_runtime.sandbox.client.base")
    assert base.SandboxHttpBase._generic_tools == GENERIC_TOOLS


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    agent = Agent(tmp_path_factory.mktemp("generic-agent")).start()
    yield agent
    agent.stop()


def test_listing_adds_the_group_and_each_tool_runs_with_its_required_parameter(agent):
    client = AgentClient()
    record = {"port": agent.port, "agent_secret": TOKEN, "container_id": "generic",
              "container_name": "generic-tools-test"}
    try:
        listed = client.list_tools(record, None, timeout=30)
        assert listed["generic"] == GENERIC_TOOLS
        assert client.list_tools(record, "generic", timeout=30) == {"generic": GENERIC_TOOLS}
        programs = {"run_shell_command": "echo generic-ok", "run_ipython_cell": "print('generic-ok')"}
        assert set(programs) == set(GENERIC_TOOLS)
        for name, tool in GENERIC_TOOLS.items():
            (required,) = tool["json_schema"]["function"]["parameters"]["required"]
            result = client.call_tool(record, name, {required: programs[name]}, timeout=60)
            text = "".join(c.get("text", "") for c in result["content"])
            assert not result.get("isError") and "generic-ok" in text, (name, result)
    finally:
        client.http.clear()
