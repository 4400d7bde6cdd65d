"""Egress per type: a type registered with ``egress="none"`` cannot open connections off its host.

"Off the host" is played by a network namespace this test makes, joined to the host by a veth
pair and addressed in 198.18.0.0/30 (the benchmarking range). Before any sandbox tries it, the test
checks that the route to it is the veth and that the host itself reaches its listener, so every
packet here stays on this machine.
"""

import secrets
import subprocess
import sys
import time

import pytest

from tests.conftest import BASE_IMAGE
from tests.fleet.test_hardening import probe

pytestmark = pytest.mark.docker

OUTSIDE_IP, HOST_IP, PORT = "198.18.0.2", "198.18.0.1", 8080
LISTENER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{OUTSIDE_IP}', {PORT})); s.listen(16)\n"
            "while True:\n    c, _ = s.accept(); c.close()\n")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def outside():
    tag = secrets.token_hex(3)
    ns, host_end, ns_end = f"sfout{tag}", f"sfoh{tag}", f"sfon{tag}"
    ip("netns", "add", ns)
    listener = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        ip("link", "set", ns_end, "netns", ns)
        ip("addr", "add", f"{HOST_IP}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{OUTSIDE_IP}/30", "dev", ns_end)
        ip("netns", "exec", ns, "ip", "link", "set", ns_end, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        route = subprocess.run(["ip", "route", "get", OUTSIDE_IP], capture_output=True, text=True)
        assert f"dev {host_end}" in route.stdout, f"198.18.0.2 would not stay local: {route.stdout}"
        listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER])
        deadline = time.monotonic() + 10
        while subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection("
                              f"('{OUTSIDE_IP}', {PORT}), timeout=1)"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "the outside namespace's listener did not come up"
            time.sleep(0.1)
        yield OUTSIDE_IP, PORT
    finally:
        if listener:
            listener.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_egress_none_blocks_what_egress_open_allows(make_fleet, outside, tmp_path):
    ext = tmp_path / "egress_ext.py"
    ext.write_text("from sandbox_core.registry import SandboxRegistry\n"
                   f"SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='sealed', egress='none')\n")
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=0)
    open_one = fleet.data("create", {"sandbox_type": "base"})
    sealed = fleet.data("create", {"sandbox_type": "sealed"})
    host, port = outside
    assert probe(fleet, open_one, host, port) == "CONNECTED"  # the world is reachable by default
    assert probe(fleet, sealed, host, port).startswith("BLOCKED")
    # and the sealed sandbox still works through the fleet
    result = fleet.data("call_tool", {"identity": sealed, "tool_name": "run_ipython_cell",
                                      "arguments": {"code": "print(6 * 7)"}})
    assert result["content"][0]["text"] == "42\n"
