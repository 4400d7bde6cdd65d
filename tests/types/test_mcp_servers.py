"""add_mcp_servers through the fleet with the SDK: stdio, streamable-HTTP and SSE servers that run
inside the sandbox (the sandbox reaches only itself), their tools listed and called, overwrite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import texts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")

AGENT_TESTS = Path(__file__).resolve().parents[1] / "agent"
RUNNER = """
import mcp_http_server, time
server, url = mcp_http_server.serve()
open("/tmp/mcp_url", "w").write(url)
time.sleep(3600)
"""


def test_http_and_stdio_mcp_servers_added_with_the_sdk(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0)
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.fs.write("mcp/mcp_http_server.py", (AGENT_TESTS / "mcp_http_server.py").read_text())
        sb.fs.write("mcp/mcp_stdio_server.py", (AGENT_TESTS / "mcp_stdio_server.py").read_text())
        sb.fs.write("mcp/run.py", RUNNER)
        sb.run_shell_command(command="setsid nohup python3 /workspace/mcp/run.py >/dev/null 2>&1 &")
        deadline = time.monotonic() + 15
        url = ""
        while not url.startswith("http://127.0.0.1:"):
            assert time.monotonic() < deadline, "the HTTP MCP server did not start"
            time.sleep(0.1)
            result = sb.run_shell_command(command="cat /tmp/mcp_url 2>/dev/null")
            url = "".join(c["text"] for c in result["content"] if c.get("description") == "stdout")

        answer = sb.add_mcp_servers({"mcpServers": {
            "streamable": {"type": "streamable_http", "url": f"{url}/mcp?prefix=h_",
                           "headers": {"X-Token": "a"}},
            "sse": {"url": f"{url}/sse?prefix=s_", "headers": {"X-Token": "b"}},
            "stdio": {"command": "python3", "args": ["/workspace/mcp/mcp_stdio_server.py"]},
        }})
        assert answer == "OK", answer
        tools = sb.list_tools()
        assert {"streamable", "sse", "stdio", "generic"} <= set(tools)
        assert list(tools["streamable"]) == ["h_echo", "h_whoami"]
        assert list(tools["sse"]) == ["s_echo", "s_whoami"]
        assert list(tools["stdio"]) == ["echo", "add", "sleep", "fail"]
        assert texts(sb.call_tool("h_echo", {"text": "over streamable HTTP"})) == ["over streamable HTTP"]
        assert texts(sb.call_tool("s_echo", {"text": "over SSE"})) == ["over SSE"]
        assert texts(sb.call_tool("h_whoami", {})) == ["a"]  # the config's headers are sent
        assert texts(sb.call_tool("s_whoami", {})) == ["b"]
        assert texts(sb.call_tool("add", {"a": 2, "b": 3})) == ["5"]

        # overwrite=False keeps the running server; overwrite=True replaces it.
        again = {"mcpServers": {"streamable": {"type": "streamable_http", "url": f"{url}/mcp?prefix=h_",
                                               "headers": {"X-Token": "c"}}}}
        assert sb.add_mcp_servers(again, overwrite=False) == "OK"
        assert texts(sb.call_tool("h_whoami", {})) == ["a"]
        assert sb.add_mcp_servers(again, overwrite=True) == "OK"
        assert texts(sb.call_tool("h_whoami", {})) == ["c"]
