"""The agentscope-runtime SDK, unchanged, against a whole fleet (real Redis, Docker, containers)."""

import asyncio
import json

import pytest
import requests

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")


def texts(result, description):
    return [c["text"] for c in result["content"] if c.get("description") == description]


def test_readme_example(fleet):
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        result = sb.run_shell_command(command="echo hi")
        assert result == {"meta": None, "content": [
            {"type": "text", "text": "hi\n", "annotations": None, "description": "stdout"},
            {"type": "text", "text": "0", "annotations": None, "description": "returncode"}],
            "isError": False}
        sb.run_ipython_cell(code="x = 6 * 7")
        assert texts(sb.run_ipython_cell(code="print(x)"), "stdout") == ["42\n"]
        tools = sb.list_tools()
        assert set(tools["generic"]) == {"run_ipython_cell", "run_shell_command"}
        info = sb.get_info()
        assert info["state"] == "running"
        assert "base" in info["version"]
        name = sb.sandbox_id
    info = fleet.data("get_info", {"identity": name})
    assert info["state"] == "released"


def test_shell_stderr_and_exit_code(fleet):
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        result = sb.run_shell_command(command="echo out; echo err >&2; exit 3")
        assert texts(result, "stdout") == ["out\n"]
        assert texts(result, "stderr") == ["err\n"]
        assert texts(result, "returncode") == ["3"]
        assert result["isError"] is True
        unknown = sb.call_tool("no_such_tool", {})
        assert unknown["isError"] is True


def test_workspace_is_mounted_and_fs_works_with_auth_on(fleet):
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.fs.write("notes/hello.txt", "héllo")
        assert sb.fs.read("notes/hello.txt") == "héllo"
        assert sb.fs.exists("notes/hello.txt")
        result = sb.run_shell_command(command="cat /workspace/notes/hello.txt")
        assert texts(result, "stdout") == ["héllo"]
        names = [e["name"] for e in sb.fs.list("notes")]
        assert names == ["hello.txt"]
        sb.fs.remove("notes/hello.txt")
        assert not sb.fs.exists("notes/hello.txt")


def test_async_sdk(fleet):
    async def session():
        async with sandbox.BaseSandboxAsync(base_url=fleet.url, bearer_token=fleet.token) as sb:
            result = await sb.run_shell_command(command="echo async")
            assert texts(result, "stdout") == ["async\n"]
            tools = await sb.list_tools_async()
            assert "generic" in tools
            info = await sb.get_info_async()
            assert info["state"] == "running"
            return sb.sandbox_id

    name = asyncio.run(session())
    assert fleet.data("get_info", {"identity": name})["state"] == "released"


def test_wrong_token_is_refused(fleet):
    response = fleet.post("create_from_pool", {"sandbox_type": "base"}, token="wrong")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid authentication credentials"}
    # The SDK never raises on HTTP errors: it carries the error text as the sandbox id.
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token="wrong") as sb:
        assert sb.sandbox_id.startswith("Error: HTTP 401")


def test_get_info_never_shows_the_sandbox_secret(fleet, docker_client):
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        info = sb.get_info()
        container = docker_client.containers.get(info["container_id"])
        assert container.labels["io.sandbox-fleet.secret"] not in json.dumps(info)
        # and the sandbox publishes no port: it is reached at its bridge address, from this host
        assert not container.attrs["HostConfig"]["PortBindings"]
        address = container.attrs["NetworkSettings"]["Networks"]
        assert info["url"] == f"http://{next(iter(address.values()))['IPAddress']}:80"
        # with safe defaults
        host_config = container.attrs["HostConfig"]
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["CapDrop"] == ["ALL"]
        assert host_config["PidsLimit"] > 0


def test_session_routes(fleet):
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        ctx = sb.get_info()["session_ctx_id"]
        assert ctx in fleet.data("list_session_keys")
        assert fleet.data("get_session_mapping", {"session_ctx_id": ctx}) == [sb.sandbox_id]
        assert fleet.data("check_health", {"identity": sb.sandbox_id}) is True
        assert fleet.data("get_status", {"identity": sb.sandbox_id}) == "running"
    assert fleet.data("get_session_mapping", {"session_ctx_id": ctx}) == []


def test_proxy_without_a_token_is_401(fleet):
    response = requests.get(f"{fleet.url}/proxy/x/workspace/list")
    assert response.status_code == 401


def test_mcp_server_added_through_the_fleet(fleet):
    from pathlib import Path

    server = (Path(__file__).resolve().parents[1] / "agent" / "mcp_stdio_server.py").read_text()
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.fs.write("mcp/server.py", server)
        config = {"mcpServers": {"tiny": {"command": "python3", "args": ["/workspace/mcp/server.py"]}}}
        assert sb.add_mcp_servers(server_configs=config) == "OK"
        tools = sb.list_tools()
        assert set(tools["tiny"]) == {"echo", "add", "sleep", "fail"}
        assert sb.list_tools(tool_type="tiny").keys() == {"tiny"}
        result = sb.call_tool("add", {"a": 2, "b": 40})
        assert result["isError"] is False
        assert "42" in result["content"][0]["text"]
