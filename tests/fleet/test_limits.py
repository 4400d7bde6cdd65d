"""Limits that protect the host by default: memory and CPU per type and per create, an OOM kill
reported as such with the sandbox still serving, a /workspace quota, and what held before (the
pids limit, the 60 s call timeout, the 16 MiB output cap), measured again.

Sandboxes here only allocate memory, fork and write files inside themselves.
"""

from __future__ import annotations

import os

import pytest

from sandbox_core.limits import container_limits, requested, size_bytes
from sandbox_core.registry import get_spec
from sandbox_core.settings import parse_settings
from tests.conftest import BASE_IMAGE

EXTENSION = f"""
from sandbox_core.registry import SandboxRegistry
SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='small',
                         resource_limits={{'memory': '192m', 'cpu': 0.5, 'workspace': '64m'}})
SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='hasty', timeout=3)
"""
GIB = 1 << 30


def texts(result: dict, description: str) -> list[str]:
    return [c["text"] for c in result["content"] if c.get("description") == description]


def call(fleet, name: str, tool: str, **arguments) -> dict:
    return fleet.data("call_tool", {"identity": name, "tool_name": tool, "arguments": arguments})


def shell(fleet, name: str, command: str) -> dict:
    return call(fleet, name, "run_shell_command", command=command)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, docker_client):
    from tests.localfleet import LocalFleet

    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "small_ext.py").write_text(EXTENSION)
    fleet = LocalFleet(tmp / "fleet", POOL_SIZE=0, FLEET_WORKER_CONCURRENCY=4,
                       FLEET_CALL_CONCURRENCY=8, FLEET_MAX_SANDBOX_MEMORY="2g",
                       FLEET_MAX_SANDBOX_CPUS=2)
    fleet.start(f"--extension={tmp / 'small_ext.py'}")
    yield fleet
    fleet.stop()
    leaked = fleet.containers(docker_client)
    for container in leaked:
        container.remove(force=True)
    assert not leaked, f"containers left: {[c.name for c in leaked]}"


# -- the rules, without Docker ----------------------------------------------------------------

def test_each_builtin_type_has_limits_and_a_create_may_ask_within_the_caps(clean_registry):
    settings = parse_settings({"FLEET_MAX_SANDBOX_MEMORY": "2g", "FLEET_MAX_SANDBOX_CPUS": "2"})
    got = {t: container_limits(settings, get_spec(settings, t), {})
           for t in ("base", "filesystem", "browser", "gui")}
    assert got["base"] == {"memory": "1g", "cpus": 1.0, "workspace_quota": 10 * GIB}
    assert got["filesystem"]["memory"] == "1g"
    assert got["browser"]["memory"] == got["gui"]["memory"] == "2g"
    assert got["browser"]["cpus"] == got["gui"]["cpus"] == 2.0
    asked = requested(settings, {"memory": "512M", "cpu": "0.5"})
    assert asked == {"memory": "512m", "cpu": "0.5"}
    assert container_limits(settings, get_spec(settings, "browser"),
                            {"memory": asked["memory"], "cpus": asked["cpu"]})["memory"] == "512m"
    assert size_bytes("1.5g", "x") == 3 * GIB // 2


# -- through the API ------------------------------------------------------------------------

@pytest.mark.docker
def test_defaults_and_a_creates_own_limits_reach_the_container(fleet, docker_client):
    base = fleet.data("create", {"sandbox_type": "base"})
    host_config = docker_client.containers.get(base).attrs["HostConfig"]
    assert host_config["Memory"] == GIB and host_config["MemorySwap"] == GIB  # no swap on top
    assert host_config["NanoCpus"] == 10**9
    own = fleet.data("create", {"sandbox_type": "base",
                                "resource_limits": {"memory": "256m", "cpu": 0.5}})
    host_config = docker_client.containers.get(own).attrs["HostConfig"]
    assert (host_config["Memory"], host_config["NanoCpus"]) == (256 << 20, 5 * 10**8)
    limit = shell(fleet, own, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
                              "cat /sys/fs/cgroup/memory.max")
    assert texts(limit, "stdout") == [f"{256 << 20}\n"]
    for name in (base, own):
        fleet.data("release", {"identity": name})


@pytest.mark.docker
@pytest.mark.parametrize("limits, detail", [
    ({"memory": "lots"}, "resource_limits.memory must be a size"),
    ({"memory": "8g"}, "FLEET_MAX_SANDBOX_MEMORY"),
    ({"memory": "1m"}, "resource_limits.memory must be from 32m"),
    ({"cpu": 0}, "resource_limits.cpu must be above 0"),
    ({"cpu": "many"}, "resource_limits.cpu must be a number"),
    ({"cpu": 3}, "FLEET_MAX_SANDBOX_CPUS"),
    ({"disk": "1g"}, "unknown key(s) ['disk']"),
])
def test_bad_limits_are_a_400_that_says_why(fleet, docker_client, limits, detail):
    response = fleet.post("create", {"sandbox_type": "base", "resource_limits": limits})
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert fleet.containers(docker_client) == [] or all(
        c.name not in response.text for c in fleet.containers(docker_client))


@pytest.mark.docker
def test_an_oom_kill_is_reported_and_the_sandbox_serves_on(fleet):
    name = fleet.data("create", {"sandbox_type": "small"})
    hog = "python3 -c 'b = bytearray(400 << 20); print(len(b))'"
    result = shell(fleet, name, hog)
    assert texts(result, "returncode") == ["137"]
    (stderr,) = texts(result, "stderr")
    assert "killed for exceeding the sandbox's memory limit (192 MiB)" in stderr
    # a hog inside a longer command: the shell survives and says a process was killed
    result = shell(fleet, name, f"{hog}; echo after")
    assert texts(result, "stdout") == ["after\n"]
    assert "A process this command started was killed" in texts(result, "stderr")[0]
    assert texts(shell(fleet, name, "echo alive"), "stdout") == ["alive\n"]

    assert texts(call(fleet, name, "run_ipython_cell", code="x = 6 * 7"), "stderr") == []
    result = call(fleet, name, "run_ipython_cell", code="b = bytearray(400 << 20)")
    (stderr,) = texts(result, "stderr")
    assert "The IPython kernel was killed for exceeding the sandbox's memory limit" in stderr
    assert "next cell starts a new kernel" in stderr
    result = call(fleet, name, "run_ipython_cell", code="print('x' in dir())")
    assert texts(result, "stdout") == ["False\n"]  # a new kernel, and it works
    fleet.data("release", {"identity": name})


@pytest.mark.docker
def test_the_workspace_quota_holds_and_goes_with_the_sandbox(fleet):
    name = fleet.data("create", {"sandbox_type": "small"})
    mount_dir = fleet.data("get_info", {"identity": name})["mount_dir"]
    assert os.path.ismount(mount_dir)
    assert "lost+found" not in str(texts(shell(fleet, name, "ls -A /workspace"), "stdout"))
    result = shell(fleet, name, "dd if=/dev/zero of=/workspace/big bs=1M count=200 2>&1; "
                                "echo ok > /workspace/small; cat /workspace/small")
    out = texts(result, "stdout")[0]
    assert "No space left on device" in out
    usage = shell(fleet, name, "du -sm /workspace | cut -f1")
    assert int(texts(usage, "stdout")[0]) <= 64
    assert os.statvfs(mount_dir).f_blocks * os.statvfs(mount_dir).f_frsize <= 64 << 20
    # Outside /workspace the image's writable layer is not size-limited on ext4 (docs).
    fleet.data("release", {"identity": name})
    image = os.path.join(os.path.dirname(mount_dir), ".quota", os.path.basename(mount_dir) + ".img")
    fleet.wait_for(lambda: not os.path.ismount(mount_dir) and not os.path.exists(image),
                   what="the workspace's mount and image to go")


# -- what held before, measured again -----------------------------------------------------------

FORK_LOOP = """
import os, time
forked = failed = 0
for _ in range(3000):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        os.close(1); os.close(2); time.sleep(8); os._exit(0)
    forked += 1
print(forked, failed)
"""


@pytest.mark.docker
def test_a_fork_loop_hits_the_pids_limit_and_a_neighbour_answers(fleet):
    bombed = fleet.data("create", {"sandbox_type": "base"})
    neighbour = fleet.data("create", {"sandbox_type": "base"})
    result = shell(fleet, bombed, f"python3 - <<'EOF'\n{FORK_LOOP}EOF")
    forked, failed = (int(n) for n in texts(result, "stdout")[0].split())
    assert forked < 512 and failed > 2000 and forked + failed == 3000
    # while the bombed sandbox is full, its neighbour answers
    assert texts(shell(fleet, neighbour, "echo neighbour"), "stdout") == ["neighbour\n"]

    def serves_again() -> bool:
        try:
            return texts(shell(fleet, bombed, "echo back"), "stdout") == ["back\n"]
        except AssertionError:
            return False

    fleet.wait_for(serves_again, timeout=60, what="the bombed sandbox to serve again")


def test_a_call_times_out_at_60_s_by_default(clean_registry):
    assert get_spec(parse_settings({}), "base").timeout == 60  # RUNTIME_SANDBOX_TIMEOUT


@pytest.mark.docker
def test_a_never_ending_command_times_out_at_its_type_s_timeout(fleet):
    """The type's timeout (60 s by default, the test above; 3 s for this test's type, so the
    suite does not wait a minute) ends the command with 124 and says so."""
    name = fleet.data("create", {"sandbox_type": "hasty"})
    result = shell(fleet, name, "sleep 1000")
    assert texts(result, "returncode") == ["124"]
    assert texts(result, "stderr") == ["Command timed out after 3 seconds"]
    assert texts(shell(fleet, name, "echo after"), "stdout") == ["after\n"]


@pytest.mark.docker
def test_200_mb_of_stdout_is_capped_at_16_mib(fleet):
    name = fleet.data("create", {"sandbox_type": "base"})
    result = shell(fleet, name, "head -c 200000000 /dev/zero | tr '\\0' a")
    (stdout,) = texts(result, "stdout")
    assert len(stdout) == 16 << 20
    assert f"output truncated: {200000000 - (16 << 20)} bytes" in texts(result, "stderr")[0]


@pytest.mark.docker
def test_a_recycled_session_keeps_its_limits_and_its_quota_workspace(make_fleet, docker_client,
                                                                      tmp_path):
    (tmp_path / "small_ext.py").write_text(EXTENSION)
    storage = tmp_path / "storage"
    storage.mkdir()
    fleet = make_fleet(extensions=[str(tmp_path / "small_ext.py")], POOL_SIZE=0,
                       HEARTBEAT_TIMEOUT=2, WATCHER_SCAN_INTERVAL=1, STORAGE_FOLDER=str(storage))
    old = fleet.data("create", {"sandbox_type": "small", "meta": {"session_ctx_id": "s-limits"},
                                "resource_limits": {"memory": "128m"}})
    shell(fleet, old, "echo kept > /workspace/state.txt")
    info = fleet.data("get_info", {"identity": old})
    mount_dir, storage_path = info["mount_dir"], info["storage_path"]
    fleet.wait_for(lambda: fleet.data("get_info", {"identity": old})["state"] == "recycled",
                   timeout=20, what="recycling")
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="container removed")
    assert os.path.ismount(mount_dir)  # kept, with its files, for the restore

    assert texts(shell(fleet, old, "cat /workspace/state.txt"), "stdout") == ["kept\n"]
    new = fleet.data("get_info", {"identity": old})["container_name"]
    assert new != old
    assert docker_client.containers.get(new).attrs["HostConfig"]["Memory"] == 128 << 20
    full = shell(fleet, new, "dd if=/dev/zero of=/workspace/big bs=1M count=100 2>&1; rm -f /workspace/big")
    assert "No space left on device" in texts(full, "stdout")[0]

    fleet.data("release", {"identity": new})
    fleet.wait_for(lambda: not os.path.ismount(mount_dir), what="the workspace unmounted")
    assert (storage / os.path.relpath(storage_path, storage) / "state.txt").read_text() == "kept\n"
