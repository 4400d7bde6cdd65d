"""Contract routes the SDK classes do not exercise, over plain HTTP against a whole fleet."""

import pytest

pytestmark = pytest.mark.docker


def stdout(result):
    return [c["text"] for c in result["content"] if c.get("description") == "stdout"]


def test_stop_start_and_status(make_fleet):
    fleet = make_fleet(POOL_SIZE=0)
    name = fleet.data("create", {"sandbox_type": "base"})
    assert fleet.data("get_status", {"identity": name}) == "running"
    assert fleet.data("stop", {"identity": name}) is True
    assert fleet.data("get_status", {"identity": name}) == "exited"
    assert fleet.data("start_async", {"identity": name}) is True
    assert fleet.data("get_status_async", {"args": name}) == "running"
    fleet.wait_for(lambda: fleet.data("check_health", {"identity": name}), what="agent back")
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": "echo back"}})
    assert stdout(result) == ["back\n"]


def test_every_route_has_an_async_twin(make_fleet):
    fleet = make_fleet(POOL_SIZE=0)
    name = fleet.data("create_async", {"sandbox_type": "base_async",
                                       "meta": {"session_ctx_id": "ctx-1"}})
    assert fleet.data("get_info_async", {"identity": name})["sandbox_type"] == "base_async"
    assert fleet.data("list_session_keys_async") == ["ctx-1"]
    assert fleet.data("get_session_mapping_async", {"args": "ctx-1"}) == [name]
    assert "generic" in fleet.data("list_tools_async", {"identity": name, "tool_type": None})
    result = fleet.data("call_tool_async", {"identity": name, "tool_name": "run_ipython_cell",
                                            "arguments": {"code": "print(1 + 1)"}})
    assert stdout(result) == ["2\n"]
    assert fleet.data("check_health_async", {"identity": name}) is True
    assert fleet.data("release_async", {"identity": name}) is True


def test_cleanup_releases_every_sandbox(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=1)
    fleet.data("create", {"sandbox_type": "base"})
    fleet.data("create", {"sandbox_type": "base"})
    assert fleet.data("cleanup") is None
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["live"] <= 1, what="cleanup")


def test_proxy_answers_404_for_unknown_and_404_for_missing_files(fleet):
    response = fleet.http.get(f"{fleet.url}/proxy/nope/workspace/list")
    assert response.status_code == 404
    assert response.json() == {"detail": "sandbox not found: nope"}
    name = fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}})
    try:
        response = fleet.http.get(f"{fleet.url}/proxy/{name}/workspace/file",
                                  params={"path": "missing.txt"})
        assert response.status_code == 404
        response = fleet.http.get(f"{fleet.url}/proxy/{name}/workspace/file",
                                  params={"path": "../../etc/passwd"})
        assert response.status_code == 403
    finally:
        fleet.data("release", {"identity": name})
