"""kill -9 in the middle of a create, a release and a long tool call, and a Redis that comes back
empty: no job is lost, no container leaks, the caller gets a clear error, records stay consistent.

runtime-sandbox-server restarts the killed part, as a supervisor would.
"""

import os
import signal
import threading
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: Short periods so recovery is seen within a test's patience.
FAST_RECOVERY = {"POOL_SIZE": 0, "FLEET_RECONCILE_INTERVAL": 2}


def kill9(fleet, marker: str) -> int:
    pids = fleet.pids(marker)
    assert pids, f"no process {marker!r} in the fleet"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids[0]


def stdout(result):
    return [c["text"] for c in result["content"] if c.get("description") == "stdout"]


def in_thread(func, *args):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", func(*args)), daemon=True)
    thread.start()
    return thread, box


def test_worker_killed_during_a_long_call(make_fleet, docker_client):
    fleet = make_fleet(**FAST_RECOVERY)
    name = fleet.data("create", {"sandbox_type": "base"})
    call = {"identity": name, "tool_name": "run_shell_command", "arguments": {"command": "sleep 40"}}
    thread, box = in_thread(fleet.post, "call_tool", call)
    # The command runs in the sandbox, so the job started (and was reported, milliseconds after).
    fleet.wait_for(lambda: "sleep 40" in str(docker_client.containers.get(name).top()),
                   what="the call to run")
    started = time.monotonic()
    kill9(fleet, "calls@")
    thread.join(30)
    response = box["result"]
    assert time.monotonic() - started < 20  # told promptly, not at the 60 s timeout
    assert response.status_code == 503
    assert "died while running" in response.json()["detail"]
    # the supervisor restarted the calls worker: the sandbox serves the next call
    fleet.wait_for(lambda: fleet.post("call_tool", {**call, "arguments": {"command": "echo ok"}},
                                      timeout=20).status_code == 200, timeout=60, what="calls again")
    assert fleet.data("release", {"identity": name}) is True


def _slow_fleet(make_fleet, tmp_path, slow_image):
    ext = tmp_path / "slow_ext.py"
    ext.write_text("from sandbox_core.registry import SandboxRegistry\n"
                   f"SandboxRegistry.register({slow_image!r}, sandbox_type='slowstart')\n")
    # Every create in flight at once (the worker is killed while all their agents start).
    return make_fleet(extensions=[str(ext)], FLEET_CREATES_IN_FLIGHT=8, **FAST_RECOVERY)


@pytest.mark.parametrize("creates", [1, 5])
def test_worker_killed_during_creates_hands_them_over(make_fleet, docker_client, slow_image,
                                                      tmp_path, creates):
    """The lifecycle worker dies with creates in flight: the restarted worker takes them over
    (their callers' job client sends them again once the dead worker stops beating), and every
    caller gets a serving sandbox; nothing is left over."""
    fleet = _slow_fleet(make_fleet, tmp_path, slow_image)
    calls = [in_thread(fleet.post, "create", {"sandbox_type": "slowstart"}) for _ in range(creates)]
    fleet.wait_for(lambda: len(fleet.containers(docker_client)) == creates,
                   what="every create's container to exist")
    kill9(fleet, "lifecycle@")  # mid-create: each agent is still starting
    names = []
    for thread, box in calls:
        thread.join(80)
        response = box["result"].json()
        assert response["data"], response["detail"]
        names.append(response["data"])
    assert len(set(names)) == creates
    for name in names:
        result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                          "arguments": {"command": "echo ok"}})
        assert stdout(result) == ["ok\n"]
    assert sorted(c.name for c in fleet.containers(docker_client)) == sorted(names)
    for name in names:
        assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: not fleet.containers(docker_client), timeout=60, what="no leaked container")
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["live"] == 0, what="the slots back")


def test_worker_killed_around_a_release(make_fleet, docker_client):
    fleet = make_fleet(**FAST_RECOVERY)
    name = fleet.data("create", {"sandbox_type": "base"})
    kill9(fleet, "lifecycle@")
    assert fleet.data("release", {"identity": name}) is True  # answered at once all the same
    assert fleet.data("get_info", {"identity": name})["state"] == "released"
    fleet.wait_for(lambda: not fleet.containers(docker_client), timeout=60,
                   what="the teardown to run after the restart")
    assert fleet.get("fleet/status").json()["live"] == 0


def test_redis_restarting_empty_is_survived(make_fleet, docker_client):
    from tests.fleet.test_metrics import scrape, value

    fleet = make_fleet(**FAST_RECOVERY)
    name = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "s1"}})
    # The create's job ends (acknowledged to the broker) after its reply; its count reaches
    # /metrics up to a second after that. A worker acknowledging into a Redis just killed dies,
    # and on the local-process backend its sandboxes die with it (Docker's live on).
    ok = {"host": fleet.values["FLEET_HOST_NAME"], "sandbox_type": "base", "result": "ok"}
    fleet.wait_for(lambda: value(scrape(fleet), "sandbox_fleet_creates_total", **ok) >= 1,
                   what="the create's job to end")
    kill9(fleet, "redis-server")  # the supervisor starts it again, empty

    def answers():
        response = fleet.post("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                            "arguments": {"command": "echo again"}}, timeout=15)
        return response.status_code == 200 and stdout(response.json()["data"]) == ["again\n"]

    fleet.wait_for(answers, timeout=60, what="the sandbox to be adopted and answer")
    info = fleet.data("get_info", {"identity": name})
    assert info["state"] == "running" and info["container_name"] == name
    assert len(fleet.containers(docker_client)) == 1
    assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="release after adoption")
