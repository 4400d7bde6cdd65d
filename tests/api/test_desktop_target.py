"""Where the API opens a desktop stream: a pod from any API, a container only from its own host."""

import flask
import pytest

from sandbox_api.desktop import _stream_target


@pytest.fixture(autouse=True)
def app_context():
    with flask.Flask(__name__).app_context():
        yield


def target(pods=False, **record):
    found = _stream_target({"container_name": "sb", "host": "h1", **record}, "h1", pods=pods)
    return found if isinstance(found, tuple) else (found.status_code, found.get_json()["detail"])


def test_a_container_is_dialled_on_its_own_host_only():
    assert target(agent_url="http://172.18.0.5:80") == ("172.18.0.5", 80)  # its bridge address
    assert target(port=50123) == ("127.0.0.1", 50123)  # DOCKER_ACCESS_MODE=port
    for record in ({"agent_url": "http://172.18.0.5:80"}, {"port": 50123}):
        status, detail = target(**{**record, "host": "h2"})
        assert status == 502 and "served by the API on its host 'h2'" in detail


def test_a_pod_is_dialled_from_any_api_and_a_cloud_endpoint_never():
    assert target(pods=True, host="h2", agent_url="http://10.1.2.3:80") == ("10.1.2.3", 80)
    status, detail = target(agent_url="https://agent.example.com/sandbox/1")
    assert status == 501 and "cloud endpoint" in detail
