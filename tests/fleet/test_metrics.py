"""/metrics on a real fleet: the series move when a session runs (create, call, release, reap)."""

import re
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.docker]


def scrape(fleet, token: str | None = "default") -> dict:
    headers = {} if token is None else {"Authorization": f"Bearer {fleet.token}"}
    response = requests.get(f"{fleet.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """A sample's value, 0 while the series does not exist yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_series_move_when_a_session_runs(make_fleet):
    fleet = make_fleet(POOL_SIZE=1, FLEET_SANDBOX_IDLE_TIMEOUT=2, WORKERS=2)
    host = fleet.values["FLEET_HOST_NAME"]
    assert requests.get(f"{fleet.url}/metrics", timeout=30).status_code == 401  # behind the token

    # Two gunicorn workers answer; /metrics adds up both (prometheus-client's multiprocess mode).
    health = {"endpoint": "/health", "method": "GET", "status": "200"}
    # The server polls /health too until it has said it is ready: let it finish first.
    fleet.wait_for(lambda: "sandbox-fleet ready" in fleet.log.read_text(errors="replace"),
                   what="the server's own readiness poll to end")
    before = value(scrape(fleet), "sandbox_fleet_http_requests_total", **health)
    for _ in range(20):
        requests.get(f"{fleet.url}/health", timeout=30)
    assert value(scrape(fleet), "sandbox_fleet_http_requests_total", **health) == before + 20

    # The pool fills: a worker's create, seen through Redis, and the pool's gauges.
    first = fleet.wait_for(lambda: (s := scrape(fleet)) and value(
        s, "sandbox_fleet_pool_warm", pool="base") == 1 and s, what="a warm pool sandbox")
    assert value(first, "sandbox_fleet_pool_target", pool="base") == 1
    assert value(first, "sandbox_fleet_sandboxes", host=host, sandbox_type="base", state="warm") == 1
    assert value(first, "sandbox_fleet_worker_processes", host=host, role="lifecycle") == 1
    assert value(first, "sandbox_fleet_worker_processes", host=host, role="calls") == 1
    assert value(first, "sandbox_fleet_store_up") == 1
    assert ("sandbox_fleet_queue_messages", (("queue", "sandbox.create"),)) in first

    # A session: a waited create, a claim from the pool, calls, a release.
    meta = {"session_ctx_id": "metrics-session"}
    created = fleet.data("create", {"sandbox_type": "base", "meta": meta}, allow_null=False)
    claimed = fleet.data("create_from_pool", {"sandbox_type": "base", "meta": meta}, allow_null=False)
    during = scrape(fleet)
    assert value(during, "sandbox_fleet_sandboxes", host=host, sandbox_type="base",
                 state="running") == 2
    assert value(during, "sandbox_fleet_live_sandboxes") >= 2
    assert value(during, "sandbox_fleet_sessions") == 1
    for name in (created, claimed):
        fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                 "arguments": {"command": "echo hi"}})
    for name in (created, claimed):
        assert fleet.data("release", {"identity": name}) is True
    # A sandbox with no session, left idle past FLEET_SANDBOX_IDLE_TIMEOUT: the reaper ends it.
    fleet.data("create", {"sandbox_type": "base"}, allow_null=False)

    def moved():
        s = scrape(fleet)
        ok = {"host": host, "sandbox_type": "base", "result": "ok"}
        return (value(s, "sandbox_fleet_creates_total", **ok) >= 3
                and value(s, "sandbox_fleet_releases_total", **ok) >= 3
                and value(s, "sandbox_fleet_reaped_total") >= 1
                and value(s, "sandbox_fleet_calls_total", host=host, op="call_tool",
                          result="ok") >= 2
                and s)

    after = fleet.wait_for(moved, timeout=60, what="the workers' series to move")
    assert value(after, "sandbox_fleet_create_seconds_count", host=host, sandbox_type="base") >= 3
    assert value(after, "sandbox_fleet_create_seconds_sum", host=host, sandbox_type="base") > 0
    assert value(after, "sandbox_fleet_release_seconds_count", host=host, sandbox_type="base") >= 3
    assert value(after, "sandbox_fleet_call_seconds_bucket", host=host, op="call_tool",
                 le="+Inf") >= 2
    # The API's own series, added up over its gunicorn workers (multiprocess mode).
    assert value(after, "sandbox_fleet_job_wait_seconds_count", job="sandbox.create") >= 2
    assert value(after, "sandbox_fleet_job_wait_seconds_count", job="sandbox.agent") >= 2
    assert value(after, "sandbox_fleet_http_requests_total", endpoint="/call_tool", method="POST",
                 status="200") >= 2
    assert value(after, "sandbox_fleet_http_request_seconds_count", endpoint="/create") >= 2
    assert value(after, "sandbox_fleet_auth_failures_total", reason="missing") >= 1
    assert value(after, "sandbox_fleet_sandboxes", host=host, sandbox_type="base",
                 state="running") == 0
    assert value(after, "sandbox_fleet_sessions") == 0

    # Every series on the page is documented, and the Grafana dashboard uses only those.
    documented = families_in((REPO / "docs" / "operations.md").read_text())
    assert {family(name) for name, _ in after} <= documented
    assert families_in((REPO / "deploy" / "grafana" / "sandbox-fleet.json").read_text()) <= documented


def family(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", name)


def families_in(text: str) -> set[str]:
    return {family(name) for name in re.findall(r"sandbox_fleet_[a-z_]+[a-z]", text)}


def test_reply_timeouts_are_counted(make_fleet, redis_url, store):
    """A sandbox on a host with no worker: the API's wait ends at its timeout, and is counted."""
    fleet = make_fleet(POOL_SIZE=0, REDIS_ENABLED="true", REDIS_URL=redis_url)
    name = fleet.prefix + "ghost"
    store.put(name, container_name=name, state="running", host="nobody-here", sandbox_type="base",
              timeout=1)
    response = fleet.post("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                        "arguments": {"command": "true"}})
    assert response.status_code == 503 and "no worker answered" in response.json()["detail"]
    samples = scrape(fleet)
    assert value(samples, "sandbox_fleet_job_reply_timeouts_total", job="sandbox.agent") == 1
    assert value(samples, "sandbox_fleet_queue_messages", queue="host.nobody-here.calls") >= 1
    store.delete(name)
