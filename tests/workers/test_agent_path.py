"""A call to a sandbox at an address of this host's bridge leaves through that bridge or not at
all (sandbox_core.netpath): a stale record whose bridge is gone sends nothing off the machine.
Here loopback plays the bridge, and an interface that does not exist plays the removed one."""

import socket

import pytest

from backends.base import Container
from sandbox_core import netpath
from sandbox_core.errors import Unavailable
from sandbox_workers import lifecycle
from sandbox_workers.agent_client import AgentClient
from tests.agent.conftest import TOKEN, Agent

GONE = "sfgone0"  # no such interface: a fleet bridge that was removed


@pytest.fixture
def listener():
    """A port that counts nothing but whether anybody connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.3)
    yield server
    server.close()


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except TimeoutError:
        return False


def record(port: int, interface: str | None) -> dict:
    return {"container_name": "sb-1", "container_id": "c1", "agent_secret": TOKEN,
            "port": None, "agent_url": f"http://127.0.0.1:{port}", "agent_interface": interface}


def test_a_call_goes_through_the_interface_its_record_names(tmp_path):
    agent = Agent(tmp_path / "sandbox").start()
    client = AgentClient()
    try:
        pinned = record(agent.port, "lo")
        assert client.check_health(pinned)
        result = client.call_tool(pinned, "run_shell_command", {"command": "echo hi"}, 30)
        assert result["content"][0]["text"].strip() == "hi"
    finally:
        client.close()
        agent.stop()


def test_a_call_through_an_interface_that_is_gone_sends_nothing(listener):
    client = AgentClient()
    try:
        with pytest.raises(Unavailable) as caught:
            client.request(record(listener.getsockname()[1], GONE), "GET", "/healthz", timeout=2)
        assert "No such device" in caught.value.detail
        assert not connected(listener)
        # the same address unpinned (a record of another backend) is dialled as before
        assert client.check_health(record(listener.getsockname()[1], None)) is False
        assert connected(listener)
    finally:
        client.close()


def test_the_desktop_stream_dials_the_same_way(listener):
    address = listener.getsockname()
    with pytest.raises(OSError, match="No such device"):
        netpath.connect(address, GONE, timeout=2)
    assert not connected(listener)
    netpath.connect(address, "lo", timeout=2).close()
    assert connected(listener)


def test_the_record_keeps_the_interface_its_backend_named():
    on_bridge = Container(id="c1", name="sb-1", status="running", url="http://172.18.0.5:80",
                          interface="sf-0123456789")
    assert lifecycle.address_fields(on_bridge, None) == {
        "ports": [], "url": "http://172.18.0.5:80", "agent_url": "http://172.18.0.5:80",
        "agent_interface": "sf-0123456789"}
