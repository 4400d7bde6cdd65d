"""A Redis that restarts empty loses less: a live sandbox comes back with its session, storage path
and desktop token (from its container's labels), and a recycled session comes back from the marker
beside its workspace, so its next call restores it with its files."""

import os
import signal
from pathlib import Path

import pytest
import redis

from sandbox_core.store.keys import HEARTBEATS

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def fleet_redis(fleet) -> redis.Redis:
    """A client of the fleet's private Redis, at the URL its server gave the API processes."""
    [pid, *_] = fleet.pids("gunicorn")
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    return redis.Redis.from_url(environ["REDIS_URL"], decode_responses=True)


def shell(fleet, name, command):
    response = fleet.post("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                        "arguments": {"command": command}}, timeout=60)
    if response.status_code != 200:
        return None
    return "".join(c["text"] for c in response.json()["data"]["content"]
                   if c.get("description") == "stdout")


def test_a_redis_loss_keeps_sessions_storage_tokens_and_recycled_workspaces(
        make_fleet, docker_client, tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    fleet = make_fleet(POOL_SIZE=0, FLEET_RECONCILE_INTERVAL=2, STORAGE_FOLDER=str(storage))
    live = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "s1"}})
    recycled = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "s2"}})
    assert shell(fleet, live, "echo a > /workspace/a.txt; echo ok") == "ok\n"
    assert shell(fleet, recycled, "echo b > /workspace/b.txt; echo ok") == "ok\n"

    # s2 looks idle for long: the reaper recycles it (container gone, workspace and marker kept)
    fleet_redis(fleet).zadd(HEARTBEATS, {"s2": 0})
    fleet.wait_for(lambda: fleet.data("get_info", {"identity": recycled})["state"] == "recycled",
                   what="s2 recycled")
    fleet.wait_for(lambda: len(fleet.containers(docker_client)) == 1, what="its container gone")
    marker = Path(fleet.values["DEFAULT_MOUNT_DIR"]) / (
        recycled.removeprefix(fleet.values["CONTAINER_PREFIX_KEY"]) + ".fleet.json")
    fleet.wait_for(marker.exists, what="the recycle marker")
    before = fleet.data("get_info", {"identity": live})

    os.kill(fleet.pids("redis-server")[0], signal.SIGKILL)  # the supervisor starts it again, empty
    fleet.wait_for(lambda: shell(fleet, live, "cat /workspace/a.txt") == "a\n", timeout=90,
                   what="the live sandbox adopted")
    after = fleet.data("get_info", {"identity": live})
    for field in ("session_ctx_id", "storage_path", "runtime_token", "meta", "sandbox_type",
                  "mount_dir", "timeout"):
        assert after[field] == before[field], field
    assert fleet.data("get_session_mapping", {"session_ctx_id": "s1"}) == [live]

    # the recycled session is back too: its next call restores it, files and all
    fleet.wait_for(lambda: fleet.post("get_info", {"identity": recycled}).status_code == 200,
                   what="the recycled record rebuilt from its marker")
    assert shell(fleet, recycled, "cat /workspace/b.txt") == "b\n"
    restored = fleet.data("get_info", {"identity": recycled})
    assert restored["state"] == "running" and restored["container_name"] != recycled
    assert restored["session_ctx_id"] == "s2"

    # and the storage path adopted from the labels is where release copies the workspace back
    assert fleet.data("release", {"identity": live}) is True
    fleet.wait_for(lambda: (Path(before["storage_path"]) / "a.txt").exists(),
                   what="the workspace copied back to its storage path")
    assert fleet.data("release", {"identity": recycled}) is True
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="nothing left running")


def test_a_worker_that_starts_against_an_empty_store_adopts_what_its_host_runs(
        make_fleet, docker_client):
    """runtime-sandbox-server stopped without AUTO_CLEANUP, then started again: its private Redis
    is new and empty, but the host remembers the epoch it last saw, so its worker adopts the
    sandbox it finds (and a session carries on) rather than removing it as a stray."""
    fleet = make_fleet(POOL_SIZE=0, AUTO_CLEANUP="false")
    name = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "s1"}})
    assert shell(fleet, name, "echo kept > /workspace/k.txt; echo ok") == "ok\n"
    assert fleet.stop() == 0
    assert [c.name for c in fleet.containers(docker_client)] == [name]  # left running, as asked

    fleet.start()  # same settings: host name, prefix, mount folder; a new private Redis
    fleet.wait_for(lambda: shell(fleet, name, "cat /workspace/k.txt") == "kept\n", timeout=60,
                   what="the sandbox adopted by the restarted fleet")
    assert fleet.data("get_session_mapping", {"session_ctx_id": "s1"}) == [name]
    assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="released after adoption")


def test_a_stray_goes_with_its_workspace_and_its_size_limited_image(make_fleet, docker_client):
    """The same restart on a host that remembers no epoch (its first run): the container is a
    stray and is removed, and its workspace folder (a loop-mounted image) is not left behind."""
    fleet = make_fleet(POOL_SIZE=0, AUTO_CLEANUP="false")
    name = fleet.data("create", {"sandbox_type": "base"})
    workspace = Path(fleet.data("get_info", {"identity": name})["mount_dir"])
    assert shell(fleet, name, "echo x > /workspace/x.txt; echo ok") == "ok\n"
    assert fleet.stop() == 0
    for remembered in workspace.parent.glob(".fleet-epoch-*"):
        remembered.unlink()

    fleet.start()
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="the stray removed")
    fleet.wait_for(lambda: not workspace.exists(), what="its workspace removed")
    assert str(workspace) not in Path("/proc/mounts").read_text()
