"""Lifetimes on a real fleet: a sandbox nobody releases ends, pools and SDK sessions do not, and a
create that no worker finishes is closed with its container."""

import time

import pytest
from agentscope_runtime.sandbox import BaseSandbox

from backends.base import LABEL_FLEET, LABEL_HOST
from sandbox_core import states
from sandbox_core.settings import parse_settings
from sandbox_core.store import Store
from tests.conftest import BASE_IMAGE
from tests.fleet.test_redis_loss import fleet_redis

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def stdout(result):
    return "".join(c["text"] for c in result["content"] if c.get("description") == "stdout")


def test_an_abandoned_sandbox_ends_but_pools_and_sdk_sessions_do_not(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=1, FLEET_SANDBOX_IDLE_TIMEOUT=3)
    pool = fleet_redis(fleet)
    pool_key = parse_settings(fleet.values).REDIS_CONTAINER_POOL_KEY + ":base"
    with BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sdk:
        fleet.wait_for(lambda: pool.lrange(pool_key, 0, -1), what="the pool refilled")
        warm = pool.lrange(pool_key, 0, -1)
        abandoned = fleet.data("create", {"sandbox_type": "base"})  # no session; never released
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": abandoned})["state"]
                       == "released", timeout=60, what="the abandoned sandbox released")
        info = fleet.data("get_info", {"identity": abandoned})
        assert info["recycle_reason"].startswith("idle_timeout")
        fleet.wait_for(lambda: abandoned not in {c.name for c in fleet.containers(docker_client)},
                       what="its container removed")
        assert f"sandbox {abandoned}: released (idle_timeout" in fleet.tail(10**7)
        # the warm pool sandbox, older still, stays; so does the SDK's session, as idle, whose
        # idleness is the heartbeat's (HEARTBEAT_TIMEOUT)
        assert pool.lrange(pool_key, 0, -1) == warm
        assert stdout(sdk.run_shell_command(command="echo still")) == "still\n"
        assert fleet.data("get_info", {"identity": sdk.sandbox_id})["state"] == "running"


def test_a_create_no_worker_finishes_is_closed_with_its_container(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0)
    store = Store(fleet_redis(fleet), parse_settings(fleet.values))
    prefix, host = fleet.values["CONTAINER_PREFIX_KEY"], fleet.values["FLEET_HOST_NAME"]
    # a create whose worker was killed after it started the container, and one no worker took
    started, lost = prefix + "killedcreate", prefix + "lostcreate"
    container = docker_client.containers.run(
        BASE_IMAGE, name=started, detach=True, network_mode="none",
        labels={LABEL_FLEET: prefix, LABEL_HOST: host})
    store.open_record(started, session_id="killedcreate", sandbox_type="base", meta={}, host=host,
                      container_id=container.id, creating_on="lifecycle@gone:1")
    store.open_record(lost, session_id="lostcreate", sandbox_type="base", meta={})
    for name in (started, lost):
        store.reserve_instance(name)
        store.put(name, created_at=1.0, updated_at=1.0)  # long past the create deadline
        store.reschedule(name, time.time())
    assert fleet.get("fleet/status").json()["live"] == 2
    fleet.wait_for(lambda: all(store.get(n)["state"] == states.ERROR for n in (started, lost)),
                   what="both creates closed")
    assert store.get(lost)["recycle_reason"].startswith("create_deadline")
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="the container torn down")
    assert fleet.get("fleet/status").json()["live"] == 0
