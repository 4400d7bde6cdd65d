"""Whole fleets on the cloud backends (CONTAINER_DEPLOYMENT=agentrun|fc) pointed at the fake
control planes: the README's SDK session through the URL the fake service gave, and zero cloud
resources left after a release, a failed create, a reaped session and the fleet's stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends.cloud_planes import SERVICES, cloud_unavailable, plane_settings, start_plane
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(params=sorted(SERVICES))
def cloud(request) -> Iterator[tuple[str, object]]:
    """(deployment, its fake plane), checked empty of resources and containers at the end (ask
    for it before make_fleet: its fleets are stopped first)."""
    reason = cloud_unavailable()
    if reason:
        skip_or_fail(reason)
    plane = start_plane(request.param)
    try:
        yield request.param, plane
        assert plane.instances.containers() == [], "fake instances left behind"
        assert plane.data_plane.unrouted == 0, "a call went without its session header"
    finally:
        plane.stop()


def _fleet(make_fleet, cloud, **settings):
    deployment, plane = cloud
    return make_fleet(CONTAINER_DEPLOYMENT=deployment, **plane_settings(deployment, plane),
                      **settings)


def _texts(result: dict, kind: str) -> list[str]:
    return [c["text"] for c in result["content"] if c.get("description") == kind]


def test_sdk_session_and_release_leave_no_cloud_resource(cloud, make_fleet):
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    _, plane = cloud
    fleet = _fleet(make_fleet, cloud, POOL_SIZE=1)
    fleet.wait_for(lambda: plane.resources(), timeout=60, what="the warm sandbox")
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        result = sb.run_shell_command(command="echo hi from the cloud")
        assert _texts(result, "stdout") == ["hi from the cloud\n"], result
        sb.run_ipython_cell(code="x = 6 * 7")
        assert _texts(sb.run_ipython_cell(code="print(x)"), "stdout") == ["42\n"]
        sb.fs.write("notes/c.txt", "in the cloud")
        assert sb.fs.read("notes/c.txt") == "in the cloud"
        assert sb.list_tools()
        info = fleet.data("get_info", {"identity": sb.sandbox_id})
        assert info["url"].startswith(plane.data_plane.base + "/")
        name, resource = sb.sandbox_id, info["container_id"]
        assert resource in plane.resources()
    fleet.wait_for(lambda: fleet.data("get_info", {"identity": name})["state"] == "released",
                   what="the release")
    fleet.wait_for(lambda: resource not in plane.resources(), timeout=60,
                   what="the released sandbox's resources deleted")
    assert fleet.stop() == 0  # AUTO_CLEANUP: the warm one goes too
    assert plane.resources() == []


def test_a_failed_create_and_a_reaped_session_leave_no_cloud_resource(cloud, make_fleet, tmp_path):
    """... and the reaped session comes back with its files (STORAGE_FOLDER: a cloud sandbox's
    workspace is copied out through its agent before its resources go, and into its successor)."""
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    deployment, plane = cloud
    storage = tmp_path / "storage"
    storage.mkdir()
    fleet = _fleet(make_fleet, cloud, POOL_SIZE=0, HEARTBEAT_TIMEOUT=2, WATCHER_SCAN_INTERVAL=1,
                   STORAGE_FOLDER=str(storage))
    # A create whose second step fails: the first one is deleted too.
    plane.fail(SERVICES[deployment][1], 500, "InternalError", "injected")
    answer = fleet.post("create", {"sandbox_type": "base"}).json()
    assert answer["data"] is None and "injected" in answer["detail"], answer
    fleet.wait_for(lambda: not plane.resources(), timeout=60,
                   what="the failed create's resources deleted")
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        once = sb.run_shell_command(command="echo once | tee /workspace/kept.txt")
        assert _texts(once, "stdout") == ["once\n"]
        name = sb.sandbox_id
        assert plane.resources()
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": name})["state"] == "recycled",
                       timeout=30, what="recycling")
        fleet.wait_for(lambda: not plane.resources(), timeout=60, what="the reaped resources gone")
        restored = sb.run_shell_command(command="cat /workspace/kept.txt")
        assert _texts(restored, "stdout") == ["once\n"], restored
    fleet.wait_for(lambda: not plane.resources(), timeout=60, what="the restored one released")
    assert fleet.stop() == 0
    assert plane.resources() == []
