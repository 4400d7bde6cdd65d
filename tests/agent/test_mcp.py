"""MCP: a stdio server added, listed and called; config files loaded on first use; timeouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox_core import polling

from .conftest import alive

SERVER = Path(__file__).with_name("mcp_stdio_server.py")


def _config(**extra) -> dict:
    return {"command": sys.executable, "args": [str(SERVER)], **extra}


def test_add_list_and_call_a_stdio_server(make_agent):
    agent = make_agent()
    assert agent.get("mcp/list_tools").json() == {}
    response = agent.post(
        "mcp/add_servers", {"server_configs": {"mcpServers": {"tester": _config()}}, "overwrite": False}
    )
    assert response.status_code == 200
    assert response.text == "OK"
    tools = agent.get("mcp/list_tools").json()
    assert list(tools) == ["tester"]
    assert list(tools["tester"]) == ["echo", "add", "sleep", "fail"]  # both pages
    assert tools["tester"]["add"] == {
        "name": "add",
        "json_schema": {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"],
                },
            },
        },
    }
    assert tools["tester"]["fail"]["json_schema"]["function"]["parameters"] == {
        "type": "object",
        "properties": {},
        "required": [],
    }
    result = agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": 2, "b": 3}}).json()
    assert result == {
        "meta": None,
        "content": [{"type": "text", "text": "5", "annotations": None}],
        "isError": False,
    }
    echoed = agent.post("mcp/call_tool", {"tool_name": "echo", "arguments": {"text": "hé"}}).json()
    assert echoed["content"][0]["text"] == "hé"
    assert echoed["structuredContent"] == {"echoed": "hé"}
    assert agent.post("mcp/call_tool", {"tool_name": "fail"}).json()["isError"] is True


def test_unknown_tool_is_404_and_bad_bodies_400(make_agent):
    agent = make_agent()
    response = agent.post("mcp/call_tool", {"tool_name": "nope", "arguments": {}})
    assert response.status_code == 404
    assert response.json() == {"detail": "Tool 'nope' not found."}
    assert agent.post("mcp/call_tool", {"arguments": {}}).status_code == 400
    assert agent.post("mcp/add_servers", {"server_configs": {}}).status_code == 400
    assert agent.post("mcp/add_servers", {"server_configs": {"mcpServers": {"x": {}}}}).status_code == 400


@pytest.fixture
def http_mcp():
    from .mcp_http_server import Handler, serve

    server, url = serve()
    yield url
    for stream in Handler.streams.values():
        stream.put(None)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("config", [
    {"type": "streamable_http", "path": "/mcp"},
    {"type": "streamableHttp", "path": "/mcp?stream=1"},  # answers as an event stream
    {"path": "/sse"},  # no streamable type: the legacy SSE transport, as upstream decides
], ids=["streamable-json", "streamable-sse-answer", "sse"])
def test_http_servers_are_added_listed_and_called(make_agent, http_mcp, config):
    agent = make_agent()
    server = {k: v for k, v in config.items() if k != "path"}
    server.update(url=http_mcp + config["path"], headers={"X-Token": "t0k"})
    response = agent.post("mcp/add_servers", {"server_configs": {"mcpServers": {"remote": server}}})
    assert response.status_code == 200, response.text
    tools = agent.get("mcp/list_tools").json()
    assert list(tools["remote"]) == ["echo", "whoami"]
    assert tools["remote"]["echo"]["json_schema"]["function"]["parameters"]["required"] == ["text"]
    result = agent.post("mcp/call_tool", {"tool_name": "echo", "arguments": {"text": "over http"}}).json()
    assert result["content"][0]["text"] == "over http" and result["isError"] is False
    assert agent.post("mcp/call_tool", {"tool_name": "whoami", "arguments": {}}).json()[
        "content"][0]["text"] == "t0k"  # the config's headers are sent


def test_an_http_server_that_does_not_answer_is_reported(make_agent):
    agent = make_agent()
    for config in ({"type": "streamable_http", "url": "http://127.0.0.1:9/mcp"},
                   {"url": "http://127.0.0.1:9/sse"}):
        response = agent.post("mcp/add_servers", {"server_configs": {"mcpServers": {"down": config}}})
        assert response.status_code == 502
        assert "down" in response.json()["detail"]
    for bad in ({"url": "ftp://127.0.0.1/x"}, {"url": "http://127.0.0.1:700000/mcp"}):
        response = agent.post("mcp/add_servers", {"server_configs": {"mcpServers": {"b": bad}}})
        assert response.status_code == 400, response.text


def test_a_server_that_cannot_start_is_reported(make_agent):
    agent = make_agent()
    response = agent.post(
        "mcp/add_servers",
        {"server_configs": {"mcpServers": {"broken": {"command": "/nonexistent/mcp-server"}}}},
    )
    assert response.status_code == 502
    assert "broken" in response.json()["detail"]
    assert agent.get("mcp/list_tools").json() == {}


def test_overwrite_false_keeps_the_running_server(make_agent):
    agent = make_agent()
    body = {"server_configs": {"mcpServers": {"tester": _config()}}}
    assert agent.post("mcp/add_servers", body).text == "OK"
    pid = _server_pids(agent)
    assert agent.post("mcp/add_servers", body).text == "OK"
    assert _server_pids(agent) == pid
    assert agent.post("mcp/add_servers", {**body, "overwrite": True}).text == "OK"
    assert _server_pids(agent) != pid


def test_tool_call_timeout_answers_an_error_result(make_agent):
    agent = make_agent()
    body = {"server_configs": {"mcpServers": {"slow": _config(timeout=0.5)}}}
    assert agent.post("mcp/add_servers", body).text == "OK"
    result = agent.post("mcp/call_tool", {"tool_name": "sleep", "arguments": {"seconds": 1}}).json()
    assert result["isError"] is True
    assert "did not answer tools/call within 0.5 seconds" in result["content"][0]["text"]
    # The late answer to the abandoned call is dropped, and the server still answers later calls.
    _wait_for_log(agent, "which no one awaits (timed out)")
    assert (
        agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": 1, "b": 1}}).json()["content"][0][
            "text"
        ]
        == "2"
    )


def test_config_file_servers_start_on_first_mcp_use(make_agent, tmp_path):
    config = tmp_path / "mcp_server_configs.json"
    config.write_text(json.dumps({"mcpServers": {"from_file": _config()}}))
    agent = make_agent(MCP_SERVER_CONFIGS=str(config))
    assert agent.get("healthz").text == "OK"
    assert _server_pids(agent) == [], "an MCP server started before any MCP call"
    assert list(agent.get("mcp/list_tools").json()) == ["from_file"]
    assert len(_server_pids(agent)) == 1


def test_a_dead_server_is_restarted_on_next_use(make_agent):
    """Asked right after the kill, the server may still look alive (its pipes close a moment
    before it can be reaped): the request that fails then restarts it too."""
    agent = make_agent()
    agent.post("mcp/add_servers", {"server_configs": {"mcpServers": {"tester": _config()}}})
    for _ in range(5):
        [pid] = _server_pids(agent)
        subprocess.run(["kill", "-9", str(pid)], check=True)
        assert list(agent.get("mcp/list_tools").json()["tester"]) == ["echo", "add", "sleep", "fail"]
        assert _server_pids(agent) != [pid]
    [pid] = _server_pids(agent)
    subprocess.run(["kill", "-9", str(pid)], check=True)
    assert polling.poll(lambda: not alive(pid), 10, first=0.01, most=0.01), f"{pid} lives on"
    result = agent.post("mcp/call_tool", {"tool_name": "add", "arguments": {"a": 2, "b": 3}}).json()
    assert result["isError"] is False, result
    assert _server_pids(agent) != [pid]


def _wait_for_log(agent, text: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while text not in agent.log.read_text():
        assert time.monotonic() < deadline, f"the agent never logged {text!r}"
        time.sleep(0.02)


def _server_pids(agent) -> list[int]:
    """Live MCP test-server processes started by this agent."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if int(ppid) == agent.proc.pid and state != "Z" and str(SERVER).encode() in args:
            pids.append(int(entry))
    return pids


def test_unset_optional_arguments_from_sdk_wrappers_are_left_out():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images" / "agent"))
    from sandbox_agent.mcp import _drop_unset

    tool = {"inputSchema": {"type": "object", "required": ["text"], "properties": {
        "time": {"type": "number"}, "text": {"type": "string"}, "textGone": {"type": "string"},
        "maybe": {"type": ["string", "null"]}, "flag": {"type": "boolean"}}}}
    # browser_wait_for(text=...) sends the other keywords as null; take_screenshot sends "".
    assert _drop_unset(tool, {"time": None, "text": "x", "textGone": None}) == {"text": "x"}
    assert _drop_unset(tool, {"text": "", "textGone": ""}) == {"text": ""}  # required: as sent
    assert _drop_unset(tool, {"text": None, "maybe": None, "flag": False}) == {
        "text": None, "maybe": None, "flag": False}
    assert _drop_unset({}, {"anything": None}) == {"anything": None}  # no schema: as sent
