"""The E2B API's answers that need no sandbox: routing, auth, validation, error shapes, the cap,
and the Connect framing (a real Redis, no Docker)."""

from __future__ import annotations

import struct

import pytest

from sandbox_api.app import create_app
from sandbox_api.e2b import connect
from sandbox_core.settings import parse_settings

KEY = {"X-API-KEY": "tok"}
ENVD = {"E2b-Sandbox-Id": "nope", "E2b-Sandbox-Port": "49983", "X-Access-Token": "x"}


@pytest.fixture
def client(redis_url, store, clean_registry):
    settings = parse_settings({"REDIS_URL": redis_url, "BEARER_TOKEN": "tok", "POOL_SIZE": "0",
                               "MAX_SANDBOX_INSTANCES": "1", "FLEET_HOST_NAME": "test-host"})
    return create_app(settings, extensions=[]).test_client()


def test_control_plane_errors_are_e2b_shaped(client):
    r = client.post("/v2/sandboxes", json={"templateID": "no-such"}, headers=KEY)
    assert r.status_code == 400 and r.json["code"] == 400
    assert "unknown template 'no-such'" in r.json["message"] and "code-interpreter-v1" in r.json["message"]
    r = client.post("/sandboxes", json={"templateID": "base", "timeout": "soon"}, headers=KEY)
    assert r.status_code == 400 and r.json["message"].startswith("timeout:")
    r = client.post("/v2/sandboxes", json={"templateID": "base", "envVars": {"A": 1}}, headers=KEY)
    assert r.status_code == 400 and "envVars" in r.json["message"]
    assert client.delete("/sandboxes/unknown", headers=KEY).json == {
        "code": 404, "message": "sandbox unknown not found"}
    assert client.post("/v2/sandboxes/unknown/connect", json={}, headers=KEY).status_code == 404
    r = client.get("/v2/sandboxes?state=gone", headers=KEY)
    assert r.status_code == 400 and "state" in r.json["message"]
    assert client.get("/v2/sandboxes", headers=KEY).json == []


def test_api_key_is_the_bearer_token(client):
    r = client.get("/v2/sandboxes")
    assert r.status_code == 401 and r.json["code"] == 401 and "X-API-KEY" in r.json["message"]
    assert client.get("/v2/sandboxes", headers={"X-API-KEY": "wrong"}).status_code == 401
    assert client.get("/v2/sandboxes", headers={"Authorization": "Bearer tok"}).status_code == 200
    # The agentscope routes and the fleet's own health are untouched by the E2B app.
    assert client.get("/health").json["status"] == "healthy"
    assert client.post("/get_info", json={"identity": "x"}, headers=KEY).status_code == 401


def test_the_cap_answers_503_with_retry_after(client, store):
    store.reserve_instance("someone-else")
    r = client.post("/v2/sandboxes", json={"templateID": "base"}, headers=KEY)
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    assert "MAX_SANDBOX_INSTANCES=1" in r.json["message"]


def test_envd_calls_for_an_unknown_sandbox_say_it_was_not_found(client):
    r = client.get("/health", headers=ENVD)
    assert r.status_code == 502 and "was not found" in r.json["message"]
    r = client.get("/files?path=/etc/hostname", headers=ENVD)
    assert r.status_code == 502 and r.json["code"] == 502
    r = client.post("/filesystem.Filesystem/Stat", json={"path": "/"}, headers=ENVD)
    assert r.status_code == 503 and r.json["code"] == "unavailable"
    r = client.post("/filesystem.Filesystem/Chown", json={}, headers=ENVD)
    assert r.status_code == 501 and r.json["code"] == "unimplemented"
    streamed = {**ENVD, "Content-Type": "application/connect+json"}
    for method, message in (("process.Process/Start", {"process": {"cmd": "true"}}),
                            ("filesystem.Filesystem/WatchDir", {"path": "/tmp"}),
                            ("process.Process/StreamInput", {"start": {"process": {"pid": 1}}})):
        r = client.post(f"/{method}", data=connect.envelope(message), headers=streamed)
        assert r.status_code == 200
        flags, size = struct.unpack(">BI", r.data[:5])
        assert flags == connect.END_STREAM
        assert r.data[5:5 + size].startswith(b'{"error":{"code":"unavailable"'), method


def test_metrics_validate_their_queries(client):
    r = client.get("/sandboxes/unknown/metrics", headers=KEY)
    assert r.status_code == 404 and r.json["message"] == "sandbox unknown not found"
    r = client.get("/sandboxes/unknown/metrics?start=yesterday", headers=KEY)
    assert r.status_code == 400 and r.json["message"].startswith("start:")
    r = client.get("/sandboxes/metrics", headers=KEY)
    assert r.status_code == 400 and "sandbox_ids" in r.json["message"]
    r = client.get("/sandboxes/metrics?sandbox_ids=" + ",".join(["x"] * 101), headers=KEY)
    assert r.status_code == 400 and "1 to 100" in r.json["message"]
    assert client.get("/sandboxes/metrics?sandbox_ids=a,b", headers=KEY).json == {"sandboxes": {}}
    assert client.get("/sandboxes/metrics?sandbox_ids=a").status_code == 401


def test_client_stream_framing():
    import io

    body = io.BytesIO(connect.envelope({"start": {"process": {"pid": 7}}})
                      + connect.envelope({"data": {"input": {"stdin": "aGk="}}})
                      + connect.envelope({}, connect.END_STREAM) + b"ignored")
    assert list(connect.read_messages(body.read)) == [{"start": {"process": {"pid": 7}}},
                                                      {"data": {"input": {"stdin": "aGk="}}}]
    with pytest.raises(ValueError, match="truncated"):
        list(connect.read_messages(io.BytesIO(connect.envelope({"a": 1})[:-1]).read))
    with pytest.raises(ValueError, match="compressed"):
        list(connect.read_messages(io.BytesIO(b"\x01\x00\x00\x00\x00").read))


def test_connect_framing():
    message = {"process": {"cmd": "/bin/bash", "args": ["-c", "echo hi"]}}
    assert connect.first_message(connect.envelope(message)) == message
    with pytest.raises(ValueError):
        connect.first_message(b"\x00\x00\x00\x00\x09{}")
    assert connect.timeout_seconds("60000", 5, 3600) == 60
    assert connect.timeout_seconds(None, 5, 3600) == 5
    assert connect.timeout_seconds("99999999", 5, 3600) == 3600
