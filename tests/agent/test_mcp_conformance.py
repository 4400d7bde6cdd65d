"""The agent's HTTP MCP transports against the official ``mcp`` server package (a test-only dependency).

A small ``MCPServer`` (FastMCP before mcp 2) runs on 127.0.0.1 in a child process, over streamable HTTP
(answers as event streams, and as plain JSON) and over the legacy SSE transport. The agent adds it,
lists its tools and calls them, as the SDK's ``add_mcp_servers`` would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the official mcp package (pip install -e .[test])")

# The child exits when its stdin closes, so it never outlives the test process, however that ends.
SERVER = r"""
import os, socket, sys, threading

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("conformance", log_level="CRITICAL")


@server.tool()
def echo(text: str) -> str:
    "Echo text back."
    return text


@server.tool()
def add(a: int, b: int = 1) -> int:
    "Add two integers."
    return a + b


@server.tool()
def fail(reason: str) -> str:
    "Always fails."
    raise ToolError(reason)


transport = sys.argv[1]
if transport == "sse":
    app = server.sse_app()
else:
    app = server.streamable_http_app(json_response=transport == "streamable-json")
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))
"""

CONFIGS = {
    "streamable-sse": {"type": "streamable_http", "path": "/mcp"},
    "streamable-json": {"type": "streamableHttp", "path": "/mcp"},
    "sse": {"path": "/sse"},
}


@pytest.fixture(params=list(CONFIGS))
def official_server(request):
    proc = subprocess.Popen([sys.executable, "-c", SERVER, request.param], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip()  # ends (empty) if the child fails to start
        assert port.isdigit(), f"the mcp server did not start (exit {proc.poll()})"
        config = dict(CONFIGS[request.param])
        config["url"] = f"http://127.0.0.1:{port}{config.pop('path')}"
        yield config
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_http_transports_list_and_call_an_official_server(make_agent, official_server):
    agent = make_agent()
    servers = {"mcpServers": {"official": official_server}}
    response = agent.post("mcp/add_servers", {"server_configs": servers})
    assert response.status_code == 200, response.text
    assert response.text == "OK"

    tools = agent.get("mcp/list_tools").json()
    assert list(tools) == ["official"]
    assert sorted(tools["official"]) == ["add", "echo", "fail"]
    add = tools["official"]["add"]["json_schema"]["function"]
    assert add["name"] == "add" and add["description"] == "Add two integers."
    assert add["parameters"]["required"] == ["a"]
    assert set(add["parameters"]["properties"]) == {"a", "b"}

    echoed = agent.post("mcp/call_tool", {"tool_name": "echo", "arguments": {"text": "hé, over HTTP"}}).json()
    assert echoed == {"meta": None, "isError": False, "structuredContent": {"result": "hé, over HTTP"},
                      "content": [{"type": "text", "text": "hé, over HTTP", "annotations": None}]}
    summed = agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": 2, "b": 3}}).json()
    assert summed["content"][0]["text"] == "5"
    assert summed["structuredContent"] == {"result": 5}
    # An optional argument the SDK's wrappers send as null is left out, so the default applies.
    defaulted = agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": 2, "b": None}}).json()
    assert defaulted["content"][0]["text"] == "3", defaulted
    failed = agent.post("mcp/call_tool", {"tool_name": "fail", "arguments": {"reason": "on purpose"}}).json()
    assert failed["isError"] is True
    assert "on purpose" in failed["content"][0]["text"]

    # Several calls on one session: the session id (streamable HTTP) or event stream (SSE) holds.
    for i in range(5):
        result = agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": i, "b": i}}).json()
        assert result["content"][0]["text"] == str(2 * i)
