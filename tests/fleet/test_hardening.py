"""What a program inside a sandbox cannot do: reach other sandboxes, the host's services, the
Docker socket, or privileges; and a type that asks for a read-only root gets one.

Every connection attempt here goes from a sandbox to an address on this machine (another sandbox
or the host's end of the fleet's bridge), never off it.
"""

import socket
import threading

import pytest

pytestmark = pytest.mark.docker

PROBE = ("import socket,sys\n"
         "s=socket.socket(); s.settimeout(2)\n"
         "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('CONNECTED')\n"
         "except OSError as e:\n    print('BLOCKED', type(e).__name__)\n")


def shell(fleet, name, command):
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": command}})
    return "".join(c["text"] for c in result["content"] if c.get("description") == "stdout")


def probe(fleet, name, host, port) -> str:
    fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                             "arguments": {"command": f"cat > /tmp/probe.py <<'EOF'\n{PROBE}EOF"}})
    return shell(fleet, name, f"python3 /tmp/probe.py {host} {port}").strip()


def network_of(docker_client, name):
    networks = docker_client.containers.get(name).attrs["NetworkSettings"]["Networks"]
    (net_name, net), = networks.items()
    return net_name, net


def test_sandboxes_cannot_reach_each_other_or_the_host(make_fleet, docker_client):
    fleet = make_fleet(POOL_SIZE=0)
    a = fleet.data("create", {"sandbox_type": "base"})
    b = fleet.data("create", {"sandbox_type": "base"})
    net_name, net_b = network_of(docker_client, b)
    assert net_name.startswith("sandbox-fleet-")
    assert probe(fleet, a, net_b["IPAddress"], 80).startswith("BLOCKED")

    # A service listening on every address of the host (as a careless deployment might run
    # Redis or the API) is not reachable from a sandbox through the bridge.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: listener.accept(), daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the listener works from the host itself
        _, net_a = network_of(docker_client, a)
        assert probe(fleet, a, net_a["Gateway"], port).startswith("BLOCKED")
        assert probe(fleet, a, net_a["Gateway"], fleet.port).startswith("BLOCKED")  # the API
    finally:
        listener.close()


def test_no_docker_socket_no_capabilities_no_new_privileges(make_fleet):
    fleet = make_fleet(POOL_SIZE=0)
    name = fleet.data("create", {"sandbox_type": "base"})
    assert shell(fleet, name, "test -e /var/run/docker.sock && echo yes || echo no") == "no\n"
    status = shell(fleet, name, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert fields == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1"}
    assert shell(fleet, name, "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                              "cat /sys/fs/cgroup/pids.max").strip() == "512"
    assert shell(fleet, name, "env | grep -c SECRET_TOKEN || true").strip() == "0"


def test_a_type_can_ask_for_a_read_only_root(make_fleet, tmp_path):
    from tests.conftest import BASE_IMAGE

    ext = tmp_path / "ro_ext.py"
    ext.write_text(
        "from sandbox_core.registry import SandboxRegistry\n"
        f"SandboxRegistry.register({BASE_IMAGE!r}, sandbox_type='readonly',\n"
        "    runtime_config={'read_only': True, 'tmpfs': {'/tmp': 'rw,size=64m'}})\n")
    fleet = make_fleet(extensions=[str(ext)], POOL_SIZE=0)
    name = fleet.data("create", {"sandbox_type": "readonly"})
    out = shell(fleet, name, "touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only; "
                             "touch /workspace/x && echo workspace-ok; touch /tmp/x && echo tmp-ok")
    assert out.split() == ["root-read-only", "workspace-ok", "tmp-ok"]
