"""Pools, the instance cap, the reaper, shutdown, reconcile and extensions, on a real fleet."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backends.base import LABEL_FLEET, LABEL_HOST, LABEL_NAME, LABEL_TYPE
from tests.conftest import container_starts

pytestmark = pytest.mark.docker

sandbox = pytest.importorskip("agentscope_runtime.sandbox")


def texts(result, description):
    return [c["text"] for c in result["content"] if c.get("description") == description]


def warm_count(fleet, docker_client, claimed):
    return len([c for c in fleet.containers(docker_client) if c.name not in claimed])


def pool_fill(fleet):
    pool = fleet.get("fleet/status").json()["pools"]["base"]
    return pool["warm"] + pool["starting"]


def test_pool_is_kept_at_exactly_pool_size_with_several_api_processes(make_fleet, docker_client):
    since = time.time()
    fleet = make_fleet(POOL_SIZE=2, WORKERS=3)
    fleet.wait_for(lambda: warm_count(fleet, docker_client, set()) == 2, what="a pool of 2")

    def acquire(_):
        return fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}})

    with ThreadPoolExecutor(6) as pool:
        claimed = set(pool.map(acquire, range(6)))
    assert len(claimed) == 6 and None not in claimed
    fleet.wait_for(lambda: warm_count(fleet, docker_client, claimed) == 2 and pool_fill(fleet) == 2,
                   what="refill to 2")
    for _ in range(10):  # and it stays there
        assert warm_count(fleet, docker_client, claimed) == 2
        time.sleep(0.2)
    # The refill never overshoots: every container ever started is a claimed or a warm one.
    started = container_starts(docker_client, fleet.prefix, since)
    assert len(started) == len(claimed) + 2, started


def test_max_instances_holds_under_20_concurrent_creates(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0, MAX_SANDBOX_INSTANCES=5)
    with ThreadPoolExecutor(20) as pool:
        names = list(pool.map(lambda _: fleet.post("create", {"sandbox_type": "base"}).json(),
                              range(20)))
    created = [n["data"] for n in names if n["data"]]
    refused = [n for n in names if n["data"] is None]
    assert len(created) == 5
    assert len(refused) == 15
    assert all("MAX_SANDBOX_INSTANCES" in n["detail"] for n in refused)
    assert len(fleet.containers(docker_client)) == 5
    # a release gives the slot back
    assert fleet.data("release", {"identity": created[0]}) is True
    assert fleet.data("create", {"sandbox_type": "base"})


def test_idle_session_is_recycled_and_restored_on_next_touch(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0, HEARTBEAT_TIMEOUT=2, WATCHER_SCAN_INTERVAL=1)
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        sb.run_shell_command(command="echo kept > /workspace/state.txt")
        old = sb.sandbox_id
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": old})["state"] == "recycled",
                       timeout=20, what="recycling")
        fleet.wait_for(lambda: not fleet.containers(docker_client), what="container removed")
        assert fleet.data("get_info", {"identity": old})["recycle_reason"] == "heartbeat_timeout"

        result = sb.run_shell_command(command="cat /workspace/state.txt")
        assert texts(result, "stdout") == ["kept\n"]  # the workspace came back with it
        info = fleet.data("get_info", {"identity": old})
        assert info["container_name"] != old and info["state"] == "running"
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="release after restore")


def test_sigterm_with_auto_cleanup_leaves_no_container(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=2)
    fleet.data("create", {"sandbox_type": "base"})
    fleet.data("create_from_pool", {"sandbox_type": "base"})
    fleet.wait_for(lambda: len(fleet.containers(docker_client)) >= 3, what="sandboxes")
    assert fleet.stop() == 0
    assert fleet.containers(docker_client) == []


def test_release_answers_at_once_and_tears_down(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0)
    name = fleet.data("create", {"sandbox_type": "base"})
    start = time.monotonic()
    assert fleet.data("release", {"identity": name}) is True
    assert time.monotonic() - start < 1
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="teardown")
    assert fleet.data("release", {"identity": name}) is True  # idempotent


def test_reconcile_removes_containers_the_fleet_does_not_know(tmp_path, docker_client, make_fleet):
    from tests.conftest import BASE_IMAGE, Fleet

    probe = Fleet(tmp_path)  # only to pick a prefix and host name
    stray = docker_client.containers.run(
        BASE_IMAGE, name=probe.prefix + "stray", detach=True,
        labels={LABEL_FLEET: probe.prefix, LABEL_HOST: probe.values["FLEET_HOST_NAME"],
                LABEL_TYPE: "base", LABEL_NAME: probe.prefix + "stray"})
    fleet = make_fleet(CONTAINER_PREFIX_KEY=probe.prefix,
                       FLEET_HOST_NAME=probe.values["FLEET_HOST_NAME"], POOL_SIZE=0)
    fleet.wait_for(lambda: stray.name not in [c.name for c in fleet.containers(docker_client)],
                   what="the stray container to go")


def test_a_type_whose_image_is_missing_leaks_nothing(make_fleet, docker_client, tmp_path):
    ext = tmp_path / "ghost_ext.py"
    ext.write_text(
        "from sandbox_core.registry import SandboxRegistry\n"
        "SandboxRegistry.register('sandbox-fleet/no-such-image:1', sandbox_type='ghost')\n")
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=0)
    response = fleet.post("create", {"sandbox_type": "ghost"})
    assert response.status_code == 400 or response.json()["data"] is None
    assert fleet.containers(docker_client) == []


def test_custom_type_from_an_extension_is_pooled_and_served(make_fleet, docker_client, tmp_path):
    from tests.conftest import BASE_IMAGE

    ext = tmp_path / "custom_sandbox.py"
    ext.write_text(
        "from sandbox_core.registry import SandboxRegistry\n"
        f"@SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='greeter', timeout=30,\n"
        "    environment={'GREETING': 'hello from the extension'},\n"
        "    resource_limits={'memory': '256m'})\n"
        "class Greeter:\n    pass\n")
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=1, DEFAULT_SANDBOX_TYPE="base,greeter")
    name = fleet.data("create_from_pool", {"sandbox_type": "greeter", "meta": {}})
    assert name
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": "echo $GREETING"}})
    assert texts(result, "stdout") == ["hello from the extension\n"]
    container = docker_client.containers.get(name)
    assert container.attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024


def test_a_dead_warm_sandbox_is_replaced_not_handed_out(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=1, FLEET_RECONCILE_INTERVAL=2)
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 1,
                   what="a warm sandbox")
    (dead,) = fleet.containers(docker_client)
    dead.kill()
    fleet.wait_for(lambda: dead.name not in [c.name for c in fleet.containers(docker_client)],
                   timeout=30, what="the dead one removed")
    name = fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}})
    assert name != dead.name
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": "echo alive"}})
    assert texts(result, "stdout") == ["alive\n"]


def test_workspace_comes_from_and_goes_back_to_storage(make_fleet, docker_client, tmp_path):
    store = tmp_path / "storage"
    (store / "proj").mkdir(parents=True)
    (store / "proj" / "hello.txt").write_text("kept between sandboxes\n")
    fleet = make_fleet(POOL_SIZE=0, STORAGE_FOLDER=str(store))
    name = fleet.data("create", {"sandbox_type": "base", "storage_path": "proj"})
    shell = {"identity": name, "tool_name": "run_shell_command"}
    result = fleet.data("call_tool", {**shell, "arguments": {"command": "cat /workspace/hello.txt"}})
    assert texts(result, "stdout") == ["kept between sandboxes\n"]
    fleet.data("call_tool", {**shell, "arguments": {"command": "echo made here > /workspace/new.txt"}})
    assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: (store / "proj" / "new.txt").exists(), what="the workspace copied back")
    assert (store / "proj" / "new.txt").read_text() == "made here\n"
    # a sandbox created without storage_path keeps its workspace under STORAGE_FOLDER/<id>
    other = fleet.data("create", {"sandbox_type": "base"})
    fleet.data("call_tool", {"identity": other, "tool_name": "run_shell_command",
                             "arguments": {"command": "echo mine > /workspace/own.txt"}})
    session_id = fleet.data("get_info", {"identity": other})["session_id"]
    fleet.data("release", {"identity": other})
    fleet.wait_for(lambda: (store / session_id / "own.txt").exists(), what="the default storage path")
