"""Egress per type: by default a sandbox reaches the public internet only, not the host's LAN nor
the cloud metadata address; ``egress="lan"`` and ``egress_allow=[...]`` open those, ``"none"``
closes everything.

"The LAN" and "the metadata service" are played by a network namespace this test makes, joined to
the host by a veth pair: the namespace holds 10.254.254.2 (the host's end is 10.254.254.1/30) and
169.254.169.254, reached through a host route via the veth. Before any sandbox tries them the test
checks that the routes to both are the veth and that the host itself reaches the listener, so
every packet here stays on this machine. No test sends a packet to a real public address: that
public destinations pass is shown by the rules themselves (only non-public ranges are rejected).
"""

import secrets
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from backends.egress import NON_PUBLIC, chain_name, host_resolvers, inbound_guard
from tests.conftest import BASE_IMAGE
from tests.fleet.test_hardening import network_of, probe, shell

pytestmark = pytest.mark.docker

LAN_IP, HOST_IP, METADATA_IP, PORT = "10.254.254.2", "10.254.254.1", "169.254.169.254", 8080
LISTENER = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {PORT})); s.listen(16)\n"
            "while True:\n    c, _ = s.accept(); c.close()\n")

EXTENSION = f"""
from sandbox_core.registry import SandboxRegistry
SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='lan', egress='lan')
SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='office', egress_allow=['10.254.254.0/30'])
SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='sealed', egress='none')
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def routed_via(address: str, device: str) -> bool:
    route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True)
    return f"dev {device}" in route.stdout


@pytest.fixture
def outside():
    """The namespace with a listener on 10.254.254.2 and 169.254.169.254, removed afterwards:
    its name (``ns``) and the listener's ``port``."""
    tag = secrets.token_hex(3)
    ns, host_end, ns_end = f"sfout{tag}", f"sfoh{tag}", f"sfon{tag}"
    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"ip netns is not permitted here: {e.stderr.decode().strip()}")
    listener = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        ip("link", "set", ns_end, "netns", ns)
        ip("addr", "add", f"{HOST_IP}/30", "dev", host_end)
        ip("link", "set", host_end, "up")
        ip("route", "add", f"{METADATA_IP}/32", "via", LAN_IP, "dev", host_end)
        for args in (["addr", "add", f"{LAN_IP}/30", "dev", ns_end],
                     ["addr", "add", f"{METADATA_IP}/32", "dev", ns_end],
                     ["link", "set", ns_end, "up"], ["link", "set", "lo", "up"]):
            ip("netns", "exec", ns, "ip", *args)
        for address in (LAN_IP, METADATA_IP):
            assert routed_via(address, host_end), f"{address} would not stay on this machine"
        listener = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER])
        deadline = time.monotonic() + 10
        while subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection("
                              f"('{LAN_IP}', {PORT}), timeout=1)"], capture_output=True).returncode:
            assert time.monotonic() < deadline, "the outside namespace's listener did not come up"
            time.sleep(0.1)
        yield SimpleNamespace(ns=ns, port=PORT)
    finally:
        if listener:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "route", "del", f"{METADATA_IP}/32", "dev", host_end],
                       capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_default_egress_is_public_only_and_types_opt_in(make_fleet, outside, tmp_path, docker_client):
    ext = tmp_path / "egress_ext.py"
    ext.write_text(EXTENSION)
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=0)
    port = outside.port
    made = {t: fleet.data("create", {"sandbox_type": t}) for t in ("base", "lan", "office", "sealed")}
    reach = {t: (probe(fleet, name, LAN_IP, port), probe(fleet, name, METADATA_IP, port))
             for t, name in made.items()}
    assert reach["base"][0].startswith("BLOCKED") and reach["base"][1].startswith("BLOCKED")
    assert reach["lan"] == ("CONNECTED", "CONNECTED")
    assert reach["office"][0] == "CONNECTED" and reach["office"][1].startswith("BLOCKED")
    assert reach["sealed"][0].startswith("BLOCKED") and reach["sealed"][1].startswith("BLOCKED")

    # Public addresses pass: the default network's chain rejects the non-public ranges only, and
    # lets the host's resolvers answer on port 53 (Docker's DNS forwards from the sandbox).
    net_name, _ = network_of(docker_client, made["base"])
    bridge = docker_client.networks.get(net_name).attrs["Options"]["com.docker.network.bridge.name"]
    rules = subprocess.run(["iptables", "-S", chain_name(bridge)], capture_output=True,
                           text=True, check=True).stdout
    rejected = {line.split()[3] for line in rules.splitlines() if "REJECT" in line}
    assert rejected == set(NON_PUBLIC)
    for server in host_resolvers():
        assert f"-d {server}/32 -p udp -m udp --dport 53 -j RETURN" in rules

    # DNS keeps working: the sandbox asks Docker's embedded DNS, which answers another sandbox's
    # name itself (no packet leaves the machine).
    assert shell(fleet, made["base"], "grep ^nameserver /etc/resolv.conf").split() == \
        ["nameserver", "127.0.0.11"]
    other = fleet.data("create", {"sandbox_type": "base"})
    resolved = shell(fleet, made["base"], f"getent hosts {other}").split()
    assert resolved and resolved[0] == network_of(docker_client, other)[1]["IPAddress"]

    # and a sealed sandbox still works through the fleet
    result = fleet.data("call_tool", {"identity": made["sealed"], "tool_name": "run_ipython_cell",
                                      "arguments": {"code": "print(6 * 7)"}})
    assert result["content"][0]["text"] == "42\n"


def test_nothing_off_the_host_reaches_a_sandbox(make_fleet, outside, docker_client):
    """A LAN machine that routes the fleet's bridge subnet through this host (the outside
    namespace, via the host's end of the veth) reaches no sandbox's agent: the fleet's
    DOCKER-USER rule drops new connections forwarded into its bridges, whatever the host's
    FORWARD policy. The host itself reaches it at that address: that is how workers call it."""
    fleet = make_fleet(POOL_SIZE=0)
    name = fleet.data("create", {"sandbox_type": "base"})
    net_name, net = network_of(docker_client, name)
    network = docker_client.networks.get(net_name).attrs
    ip("netns", "exec", outside.ns, "ip", "route", "add", network["IPAM"]["Config"][0]["Subnet"],
       "via", HOST_IP)
    connect = f"import socket; socket.create_connection(('{net['IPAddress']}', 80), timeout=2)"
    assert subprocess.run([sys.executable, "-c", connect], capture_output=True).returncode == 0
    from_lan = subprocess.run(["ip", "netns", "exec", outside.ns, sys.executable, "-c", connect],
                              capture_output=True, text=True)
    assert from_lan.returncode != 0 and "timed out" in from_lan.stderr, from_lan.stderr
    bridge = network["Options"]["com.docker.network.bridge.name"]
    assert subprocess.run(["iptables", "-C", *inbound_guard(bridge)]).returncode == 0


def test_egress_allow_is_checked_at_registration(clean_registry):
    from sandbox_core.errors import SettingsError
    from sandbox_core.registry import SandboxRegistry

    with pytest.raises(SettingsError, match="not an IPv4 network"):
        SandboxRegistry.register(BASE_IMAGE, sandbox_type="bad", egress_allow=["10.0.0.0/33"])
    with pytest.raises(SettingsError, match="needs egress='open'"):
        SandboxRegistry.register(BASE_IMAGE, sandbox_type="bad", egress="none",
                                 egress_allow=["10.0.0.0/8"])
    SandboxRegistry.register(BASE_IMAGE, sandbox_type="ok", egress_allow=["10.1.2.3/16"])
    assert SandboxRegistry._custom["ok"].egress_allow == ("10.1.0.0/16",)
