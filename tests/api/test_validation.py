"""The API's answers to bad input and unknown ids, with a real Redis and no workers."""

import pytest

from sandbox_api import create_app
from sandbox_core import states

TOKEN = "s3cret"


@pytest.fixture
def client(settings, store):
    app = create_app(settings.replace(BEARER_TOKEN=TOKEN), extensions=[])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


def post(client, route, body=None, **kwargs):
    return client.post(f"/{route}", json=body if body is not None else {}, **kwargs)


def test_auth_answers_as_upstream(client):
    response = client.post("/get_info", json={"identity": "x"}, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json == {"detail": "Authentication required"}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    response = client.post("/get_info", json={"identity": "x"}, headers={"Authorization": "Basic x"})
    assert response.json == {"detail": "Authentication required"}
    response = client.post("/get_info", json={"identity": "x"},
                           headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.json == {"detail": "Invalid authentication credentials"}
    assert client.get("/health", headers={"Authorization": ""}).json["status"] == "healthy"


@pytest.mark.parametrize("route,body,field", [
    ("call_tool", {"identity": "x"}, "tool_name"),
    ("call_tool", {"identity": "x", "tool_name": "t", "arguments": "no"}, "arguments"),
    ("call_tool", {"identity": "x", "tool_name": "t", "surprise": 1}, "surprise"),
    ("get_info", {}, "identity"),
    ("release", {"identity": 5}, "identity"),
    ("create_from_pool", {"sandbox_type": 3}, "sandbox_type"),
    ("add_mcp_servers", {"identity": "x"}, "server_configs"),
    ("get_session_mapping", {}, "session_ctx_id"),
])
def test_bad_bodies_get_400_naming_the_field(client, route, body, field):
    for suffix in ("", "_async"):
        response = post(client, route + suffix, body)
        assert response.status_code == 400, response.json
        assert field in response.json["detail"]


def test_non_object_bodies_get_400(client):
    response = client.post("/get_info", data="[1]", content_type="application/json")
    assert response.status_code == 400
    assert "JSON object" in response.json["detail"]
    response = client.post("/get_info", data="{nope", content_type="application/json")
    assert response.status_code == 400


def test_unknown_type_is_400_and_creates_nothing(client, store):
    response = post(client, "create_from_pool", {"sandbox_type": "no_such_type"})
    assert response.status_code == 400
    assert "unknown sandbox_type 'no_such_type'" in response.json["detail"]
    assert store.live_count() == 0
    assert list(store.scan_records()) == []


def test_null_environment_value_is_400(client, store):
    response = post(client, "create", {"sandbox_type": "base", "environment": {"A": None}})
    assert response.status_code == 400
    assert "environment.A" in response.json["detail"]
    assert store.live_count() == 0


def test_unknown_ids(client):
    assert post(client, "release", {"identity": "nope"}).json == {"data": True}
    response = post(client, "get_info", {"identity": "nope"})
    assert response.status_code == 404
    assert response.json == {"detail": "sandbox not found: nope"}
    assert post(client, "call_tool", {"identity": "nope", "tool_name": "x"}).status_code == 404
    assert post(client, "check_health", {"identity": "nope"}).json == {"data": False}
    assert post(client, "get_status", {"identity": "nope"}).json == {"data": None}
    assert post(client, "get_session_mapping", {"session_ctx_id": "nope"}).json == {"data": []}
    assert client.get("/proxy/nope/workspace/list").status_code == 404


def test_async_twins_accept_the_sdks_args_bodies(client, store):
    name = store.settings.CONTAINER_PREFIX_KEY + "abc"
    store.open_record(name, session_id="abc", sandbox_type="base", meta={}, agent_secret="secret",
                      desktop_token="desk")
    assert store.finish_create(name, states.WARM)
    info = post(client, "get_info_async", {"args": name}).json["data"]
    assert info["container_name"] == name
    assert post(client, "get_info_async", {"args": [name]}).json["data"]["session_id"] == "abc"
    assert post(client, "get_info_async", {"args": "abc", "kwargs": None}).status_code == 200
    # the in-sandbox secret never leaves the fleet
    assert info["runtime_token"] == "desk"
    assert "secret" not in str(info)


def test_failed_create_is_200_null_so_the_sdk_raises(client, store):
    app_fleet = client.application.extensions["sandbox_fleet"]
    app_fleet.settings = app_fleet.settings.replace(MAX_SANDBOX_INSTANCES=1)
    app_fleet.store.settings = app_fleet.settings
    store.reserve_instance("someone-else")
    response = post(client, "create", {"sandbox_type": "base"})
    assert response.status_code == 200
    assert response.json["data"] is None
    assert "MAX_SANDBOX_INSTANCES" in response.json["detail"]
    assert store.live_count() == 1


def test_failed_auth_is_rate_limited_per_address(settings, store):
    from sandbox_api import auth

    auth._blocked.clear()
    app = create_app(settings.replace(BEARER_TOKEN=TOKEN, FLEET_AUTH_FAILURES_PER_MINUTE=5),
                     extensions=[])
    client = app.test_client()
    codes = [client.post("/list_session_keys", json={},
                         headers={"Authorization": f"Bearer guess{i}"}).status_code for i in range(7)]
    assert codes == [401] * 5 + [429] * 2
    # once blocked, a wrong or missing token from that address gets 429; the right one still passes
    response = client.post("/list_session_keys", json={}, headers={"Authorization": ""})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"
    response = client.post("/list_session_keys", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    other = client.post("/list_session_keys", json={}, headers={"Authorization": f"Bearer {TOKEN}"},
                        environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 200
    auth._blocked.clear()


def test_storage_path_stays_inside_storage_folder(settings, store, tmp_path):
    app = create_app(settings.replace(BEARER_TOKEN=TOKEN, STORAGE_FOLDER=str(tmp_path)), extensions=[])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    for escape in ("../outside", "/etc", "a/../../b"):
        response = post(client, "create", {"sandbox_type": "base", "storage_path": escape})
        assert response.status_code == 400, escape
        assert "inside STORAGE_FOLDER" in response.json["detail"]
    assert store.live_count() == 0


def test_storage_path_needs_a_storage_folder(client, store):
    response = post(client, "create", {"sandbox_type": "base", "storage_path": "proj"})
    assert response.status_code == 400
    assert "STORAGE_FOLDER" in response.json["detail"]
