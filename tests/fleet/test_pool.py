"""The warm pool under load: every claim refills it at once (never past POOL_SIZE), claims that
find it empty are served first come first served as creates finish, a worker starts no more
sandboxes at once than FLEET_CREATES_IN_FLIGHT, and the lifecycle worker yields the CPU to calls."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import container_start_times, container_starts
from tests.fleet.test_crash import in_thread

pytestmark = pytest.mark.docker

ECHO = {"tool_name": "run_shell_command", "arguments": {"command": "echo ok"}}


def pool(fleet) -> dict:
    return fleet.get("fleet/status").json()["pools"]["base"]


def settled(fleet, warm: int) -> bool:
    state = pool(fleet)
    return state["warm"] == warm and state["starting"] == 0 and state["waiting"] == 0


def claim(fleet, ctx: str) -> str:
    return fleet.data("create_from_pool", {"sandbox_type": "base",
                                           "meta": {"session_ctx_id": ctx}}, allow_null=False)


def answers(fleet, name: str) -> bool:
    result = fleet.data("call_tool", {"identity": name, **ECHO})
    return [c["text"] for c in result["content"] if c.get("description") == "stdout"] == ["ok\n"]


def test_every_claim_refills_the_pool_at_once_never_past_pool_size(make_fleet, docker_client):
    since = time.time()
    fleet = make_fleet(POOL_SIZE=2, WATCHER_SCAN_INTERVAL=0)  # no beat: only claims refill
    # The pool starts empty: the first claim waits for a create of its own and has the pool
    # filled behind it.
    claimed = [claim(fleet, "first")]
    fleet.wait_for(lambda: settled(fleet, 2), what="the pool filled by a claim")
    for i in range(3):
        claimed.append(claim(fleet, f"s{i}"))
        fleet.wait_for(lambda: settled(fleet, 2), what="the pool refilled by a claim")
    assert all(answers(fleet, name) for name in claimed)
    assert fleet.data("get_session_mapping", {"session_ctx_id": "first"}) == [claimed[0]]
    # Exactly the claimed ones and the two warm ones were ever started.
    started = container_starts(docker_client, fleet.prefix, since)
    assert len(started) == len(set(started)) == len(claimed) + 2, started
    assert set(claimed) <= set(started)


def test_a_burst_past_the_pool_is_served_whole_and_leaves_it_at_pool_size(make_fleet,
                                                                          docker_client):
    since = time.time()
    fleet = make_fleet(POOL_SIZE=2, FLEET_CREATES_IN_FLIGHT=1)
    fleet.wait_for(lambda: settled(fleet, 2), what="a pool of 2")
    with ThreadPoolExecutor(8) as threads:
        claimed = list(threads.map(lambda i: claim(fleet, f"burst{i}"), range(8)))
    assert len(set(claimed)) == 8
    assert all(answers(fleet, name) for name in claimed)
    fleet.wait_for(lambda: settled(fleet, 2), what="the pool refilled")
    # The first pool of two; then six claims waited, and each create went to one of them or to
    # the pool: nothing else was ever started.
    started = container_starts(docker_client, fleet.prefix, since)
    assert len(started) == 2 + 6 + 2, started
    assert len(fleet.containers(docker_client)) == 8 + 2


@pytest.mark.slow
def test_a_worker_starts_no_more_sandboxes_at_once_than_creates_in_flight(
        make_fleet, docker_client, slow_image, tmp_path):
    ext = tmp_path / "slow_ext.py"
    ext.write_text("from sandbox_core.registry import SandboxRegistry\n"
                   f"SandboxRegistry.register({slow_image!r}, sandbox_type='slowstart')\n")
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=0, FLEET_CREATES_IN_FLIGHT=1)
    since = time.time()
    calls = [in_thread(fleet.post, "create", {"sandbox_type": "slowstart"}) for _ in range(2)]
    for thread, _ in calls:
        thread.join(90)
    assert all(box["result"].json()["data"] for _, box in calls)
    # Its agent answers 8 s after the start: the second container started only after that.
    first, second = container_start_times(docker_client, fleet.prefix, since)
    assert second - first >= 7.5, (first, second)


def test_the_lifecycle_worker_runs_niced_and_the_call_path_does_not(make_fleet):
    from sandbox_workers.app import LIFECYCLE_NICE

    fleet = make_fleet(POOL_SIZE=0)

    def nice(marker: str) -> int:
        (pid,) = fleet.pids(marker)
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])

    base = os.nice(0)
    # The worker renices itself as Celery initialises it, before it consumes a job; the fleet's
    # /health can answer a moment before that.
    fleet.wait_for(lambda: nice("lifecycle@") == base + LIFECYCLE_NICE, what="the niced worker")
    assert nice("calls@") == nice("gunicorn") == base
