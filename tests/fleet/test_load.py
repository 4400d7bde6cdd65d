"""A bounded load test (the CI size; `python -m bench.load` runs the full 100 sessions)."""

import pytest

from bench.load import run_load, two_host_fleet

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_concurrent_sdk_sessions_across_two_hosts(tmp_path, redis_url, raw_redis, docker_client):
    raw_redis.flushdb()
    fleet, other = two_host_fleet(tmp_path / "fleet", redis_url, POOL_SIZE=4,
                                  FLEET_WORKER_CONCURRENCY=4, FLEET_CALL_CONCURRENCY=16)
    try:
        result = run_load(fleet, sessions=24, calls=5, concurrency=24)
    finally:
        other.stop()
        fleet.stop()
    leaked = fleet.containers(docker_client)
    for container in leaked:
        container.remove(force=True)
    assert result["errors"] == 0, result["error_samples"]
    assert result["address_collisions"] == 0
    assert len(result["hosts_used"]) == 2
    assert result["call"]["n"] == 24 * 5
    assert not leaked
