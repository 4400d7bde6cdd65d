"""Several worker hosts on one machine (own names, port ranges and queues), and two beats at once."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import container_starts

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def stdout(result):
    return [c["text"] for c in result["content"] if c.get("description") == "stdout"]


def host_port(docker_client, name) -> int:
    attrs = docker_client.containers.get(name).attrs
    return int(attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])


@pytest.fixture
def shared_redis(redis_url, raw_redis):
    raw_redis.flushdb()
    return {"REDIS_ENABLED": "true", "REDIS_URL": redis_url}


def test_creates_spread_across_hosts_and_calls_go_to_the_owner(make_fleet, shared_redis, docker_client):
    # Published ports (DOCKER_ACCESS_MODE=port), so that each host's own PORT_RANGE shows.
    fleet = make_fleet(POOL_SIZE=0, FLEET_WORKER_CONCURRENCY=2, DOCKER_ACCESS_MODE="port",
                       **shared_redis)
    other_range = (int(fleet.values["PORT_RANGE"].strip("[]").split(",")[1]) + 1000,) * 2
    other_range = (other_range[0], other_range[0] + 100)
    other = fleet.add_host(f"{fleet.values['FLEET_HOST_NAME']}-b", other_range,
                           FLEET_WORKER_CONCURRENCY=2)
    try:
        with ThreadPoolExecutor(12) as pool:
            names = list(pool.map(lambda _: fleet.data("create", {"sandbox_type": "base"}), range(12)))
        assert None not in names and len(set(names)) == 12
        infos = {name: fleet.data("get_info", {"identity": name}) for name in names}
        hosts = {info["host"] for info in infos.values()}
        assert hosts == {fleet.values["FLEET_HOST_NAME"], other.name}

        ranges = {fleet.values["FLEET_HOST_NAME"]: tuple(
            int(p) for p in fleet.values["PORT_RANGE"].strip("[]").split(",")), other.name: other_range}
        ports = []
        for name, info in infos.items():
            port = host_port(docker_client, name)
            start, end = ranges[info["host"]]
            assert start <= port < end, f"{name} on {info['host']} got port {port}"
            ports.append(port)
            result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                              "arguments": {"command": "echo $HOSTNAME"}})
            assert stdout(result) == [docker_client.containers.get(name).attrs["Config"]["Hostname"] + "\n"]
        assert len(set(ports)) == len(ports)

        for name in names:
            assert fleet.data("release", {"identity": name}) is True
        fleet.wait_for(lambda: not fleet.containers(docker_client), what="teardowns on both hosts")
    finally:
        other.stop()


def test_two_beats_refill_exactly_and_reap_once(make_fleet, shared_redis, docker_client):
    since = time.time()
    # The claimed sandboxes have no session: without FLEET_SANDBOX_IDLE_TIMEOUT=0 they would be
    # released after HEARTBEAT_TIMEOUT (their idle limit by default) while the test counts them.
    fleet = make_fleet(POOL_SIZE=2, HEARTBEAT_TIMEOUT=3, FLEET_SANDBOX_IDLE_TIMEOUT=0, **shared_redis)
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "sandbox_workers", "beat", "--loglevel", "warning",
         "-s", str(fleet.config.parent / "beat2-schedule")],
        env={**__import__("os").environ, "SANDBOX_FLEET_CONFIG": str(fleet.config)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 2,
                       what="a pool of 2")
        claimed = [fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}})
                   for _ in range(3)]
        fleet.wait_for(lambda: len(fleet.containers(docker_client)) == len(claimed) + 2,
                       what="exactly two warm beside the claimed")

        # A session idle past HEARTBEAT_TIMEOUT is recycled once, and restored once.
        name = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "idle"}})
        fleet.wait_for(lambda: fleet.data("get_info", {"identity": name})["state"] == "recycled",
                       timeout=30, what="recycling")
        result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                          "arguments": {"command": "echo back"}})
        assert stdout(result) == ["back\n"]
        assert len(fleet.data("get_session_mapping", {"session_ctx_id": "idle"})) == 1
        assert len(fleet.containers(docker_client)) == len(claimed) + 2 + 1
        # Both beats refilled for as long as the test ran: every container ever started is a
        # claimed one, one of the two warm, or the idle session's before and after its recycling.
        started = container_starts(docker_client, fleet.prefix, since)
        assert len(started) == len(claimed) + 2 + 2, started
    finally:
        beat.terminate()
        beat.wait(20)


def test_a_draining_host_starts_no_creates(make_fleet, shared_redis, docker_client, raw_redis):
    """Once a host drains (its shutdown), creates it takes from the shared queue are handed on to
    another host: none starts a container there after the drain has counted its sandboxes (the
    race that leaked a container when a host stopped while another host's beat refilled)."""
    from sandbox_core.settings import parse_settings
    from sandbox_core.store import Store

    fleet = make_fleet(POOL_SIZE=0, FLEET_WORKER_CONCURRENCY=2, **shared_redis)
    start = int(fleet.values["PORT_RANGE"].strip("[]").split(",")[1]) + 1000
    other = fleet.add_host(f"{fleet.values['FLEET_HOST_NAME']}-b", (start, start + 100),
                           FLEET_WORKER_CONCURRENCY=2)
    try:
        store = Store.connect(parse_settings({"REDIS_URL": shared_redis["REDIS_URL"]}))
        store.start_draining(other.name, 120)
        with ThreadPoolExecutor(6) as pool:
            names = list(pool.map(lambda _: fleet.data("create", {"sandbox_type": "base"}), range(6)))
        assert None not in names
        assert {fleet.data("get_info", {"identity": n})["host"] for n in names} == \
            {fleet.values["FLEET_HOST_NAME"]}
        assert not docker_client.containers.list(
            all=True, filters={"label": f"io.sandbox-fleet.host={other.name}"})
        for name in names:
            assert fleet.data("release", {"identity": name}) is True
        fleet.wait_for(lambda: not fleet.containers(docker_client), what="the teardowns")
    finally:
        other.stop()
