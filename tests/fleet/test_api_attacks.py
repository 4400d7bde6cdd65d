"""The attacks of issue 7 against a real fleet (runtime-sandbox-server, real Docker, loopback only):
the desktop token's path traversal, chunked bodies past the limit, huge agent replies, the auth
rate limit, lone surrogates, and the sandbox's secret inside the sandbox."""

from __future__ import annotations

import concurrent.futures
import socket

import pytest
import requests

from sandbox_workers.secret import LABEL_SECRET
from tests.localfleet import LocalFleet

pytestmark = pytest.mark.docker

MiB = 1024 * 1024
PRIVATE = "TOP-SECRET-CONTENT-7f3a"
#: Sent byte for byte (no client normalises them): each reached the agent before the fix.
TRAVERSALS = [
    "vnc/../workspace/file%3Fpath%3Dprivate.txt",
    "vnc/%2E%2E/workspace/file%3Fpath%3Dprivate.txt",
    "vnc/%2e%2e/workspace/file%3Fpath%3Dprivate.txt",
    "vnc/../workspace/list%3Fpath%3D.",
    "vnc/../watcher/git_logs",
    "vnc/../mcp/list_tools",
    "vnc/..%2Fworkspace%2Ffile%3Fpath%3Dprivate.txt",
    "vnc/core/../../workspace/file%3Fpath%3Dprivate.txt",
    "vnc/%2E%2E%5Cworkspace%5Cfile%3Fpath%3Dprivate.txt",
    "vnc/core%00/../../workspace/file%3Fpath%3Dprivate.txt",
    "vnc/./../healthz",
    "vnc/%23/../../workspace/file%3Fpath%3Dprivate.txt",
]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, docker_client):
    """One fleet for the module, with a small cap on agent replies so a test can pass it."""
    fleet = LocalFleet(tmp_path_factory.mktemp("attacks"), POOL_SIZE=1, FLEET_WORKER_CONCURRENCY=8,
                       FLEET_CALL_CONCURRENCY=16, FLEET_MAX_AGENT_REPLY_MB=1).start()
    yield fleet
    fleet.stop()
    leaked = fleet.containers(docker_client)
    for container in leaked:
        container.remove(force=True)
    assert not leaked, f"containers left after SIGTERM: {[c.name for c in leaked]}"


@pytest.fixture
def sandbox(attacked):
    name = attacked.data("create_from_pool", {"sandbox_type": "base"}, allow_null=False)
    shell(attacked, name, f"echo {PRIVATE} > /workspace/private.txt")
    yield name
    attacked.data("release", {"identity": name})


def shell(fleet, name: str, command: str) -> dict:
    return fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                    "arguments": {"command": command}})


def stdout(result: dict) -> str:
    return "".join(c["text"] for c in result["content"] if c.get("description") == "stdout")


def raw_get(fleet, target: str) -> tuple[int, bytes]:
    """GET exactly ``target`` (as curl --path-as-is), with no bearer token."""
    with socket.create_connection(("127.0.0.1", fleet.port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def vm_peak(pid: int) -> int:
    """A process's peak resident memory (VmHWM), bytes."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# -- 1. the desktop token --------------------------------------------------------------------

def test_desktop_token_reaches_no_file_but_novnc(attacked, sandbox):
    token = attacked.data("get_info", {"identity": sandbox})["runtime_token"]
    assert token
    for path in TRAVERSALS:
        status, answer = raw_get(attacked, f"/desktop/{sandbox}/{path}?password={token}")
        assert status in (403, 404), (path, answer)
        assert PRIVATE.encode() not in answer and b'"name"' not in answer, path
    # A base sandbox has no desktop, and /proxy needs the bearer token whatever the password.
    assert raw_get(attacked, f"/desktop/{sandbox}/vnc/vnc_relay.html?password={token}")[0] == 404
    status, answer = raw_get(attacked, f"/proxy/{sandbox}/workspace/file?path=private.txt&password={token}")
    assert status == 401 and PRIVATE.encode() not in answer


def test_gui_desktop_still_loads_and_holds(attacked, docker_client):
    from tests.types.conftest import require_image

    require_image(docker_client, "gui")
    name = attacked.data("create", {"sandbox_type": "gui"}, allow_null=False)
    try:
        shell(attacked, name, f"echo {PRIVATE} > /workspace/private.txt")
        token = attacked.data("get_info", {"identity": name})["runtime_token"]
        browser = requests.Session()  # no bearer token, as a browser
        page = browser.get(f"{attacked.url}/desktop/{name}/vnc/vnc_relay.html?password={token}",
                           timeout=30)
        assert page.status_code == 200 and "core/rfb.js" in page.text
        assert browser.get(f"{attacked.url}/desktop/{name}/vnc/core/rfb.js", timeout=30).ok
        for path in TRAVERSALS:
            status, answer = raw_get(attacked, f"/desktop/{name}/{path}?password={token}")
            assert status in (403, 404) and PRIVATE.encode() not in answer, (path, answer)
    finally:
        attacked.data("release", {"identity": name})


# -- 2. chunked bodies -------------------------------------------------------------------------

def test_chunked_body_past_the_limit_is_413_and_never_reaches_the_sandbox(attacked, sandbox):
    workers = [pid for master in attacked.pids("gunicorn") for pid in _children(master)]
    assert workers
    before = {pid: vm_peak(pid) for pid in workers}

    def body():
        block = b"x" * MiB
        for _ in range(200):
            yield block

    try:
        response = attacked.http.put(f"{attacked.url}/proxy/{sandbox}/workspace/file?path=big.bin",
                                     data=body(), timeout=120)
        assert response.status_code == 413
        assert "FLEET_MAX_BODY_MB (64 MiB)" in response.json()["detail"]
    except requests.ConnectionError:
        pass  # the API may close the connection once it has answered and stopped reading
    assert "no" in stdout(shell(attacked, sandbox, "test -e /workspace/big.bin && echo yes || echo no"))
    for pid, peak in before.items():  # the API held at most the limit, not the 200 MiB
        assert vm_peak(pid) - peak < 150 * MiB


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


# -- 3. huge replies ---------------------------------------------------------------------------

def test_replies_past_the_cap_are_reported_and_the_worker_stays_small(attacked, sandbox):
    [calls] = attacked.pids("calls@")
    before = vm_peak(calls)
    loud = "head -c 5000000 /dev/zero | tr '\\0' x"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: attacked.post("call_tool", {
            "identity": sandbox, "tool_name": "run_shell_command", "arguments": {"command": loud}}),
            range(8)))
    for response in results:
        assert response.status_code == 200, response.text  # a tool error, never a 503
        data = response.json()["data"]
        assert data["isError"] is True
        assert "FLEET_MAX_AGENT_REPLY_MB (1 MiB)" in data["content"][0]["text"]
    assert vm_peak(calls) - before < 100 * MiB
    shell(attacked, sandbox, f"{loud} > /workspace/loud.txt")
    proxied = attacked.http.get(f"{attacked.url}/proxy/{sandbox}/workspace/file?path=loud.txt", timeout=60)
    assert proxied.status_code == 502 and "FLEET_MAX_AGENT_REPLY_MB" in proxied.json()["detail"]
    assert stdout(shell(attacked, sandbox, "echo still here")) == "still here\n"


# -- 4. the rate limit -------------------------------------------------------------------------

def test_guessing_does_not_lock_the_right_token_out(attacked):
    codes = [attacked.post("list_session_keys", token=f"guess{i}").status_code for i in range(25)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
    assert attacked.post("list_session_keys").status_code == 200
    assert attacked.post("list_session_keys", token="guess").status_code == 429
    spoofed = requests.post(f"{attacked.url}/list_session_keys", json={}, timeout=30, headers={
        "Authorization": "Bearer guess", "X-Forwarded-For": "203.0.113.9"})
    assert spoofed.status_code == 429  # FLEET_TRUSTED_PROXIES=0: the header is not believed


# -- 5. lone surrogates ------------------------------------------------------------------------

def test_lone_surrogates_are_400(attacked):
    for route in ("get_info", "create", "call_tool", "release", "get_session_mapping"):
        response = attacked.http.post(f"{attacked.url}/{route}", data='{"identity": "\\ud800"}',
                                      headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 400, (route, response.text)
        assert "surrogate" in response.json()["detail"]


# -- 6. the secret inside the sandbox -----------------------------------------------------------

def test_no_tool_can_read_the_sandbox_secret(attacked, sandbox, docker_client):
    info = attacked.data("get_info", {"identity": sandbox})
    container = docker_client.containers.get(info["container_id"])
    secret = container.labels[LABEL_SECRET]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert secret not in env.values() and "SECRET_TOKEN_SHA256" in env
    probe = r"""
import glob, re
out = []
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        out.append(open(path, "rb").read().decode(errors="replace"))
    except OSError as e:
        out.append(f"{path}: {e.strerror}")
for pid in [p.split("/")[2] for p in glob.glob("/proc/[0-9]*")]:
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        with open(f"/proc/{pid}/mem", "rb") as mem:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if "r" in line.split()[1] and end - start < 1 << 28:
                    try:
                        mem.seek(start)
                        out.append(mem.read(end - start).decode("latin-1"))
                    except (OSError, OverflowError, ValueError):
                        pass
    except OSError as e:
        out.append(f"{pid}: {e.strerror}")
open("/workspace/everything.txt", "w").write("\n".join(out))
"""
    shell(attacked, sandbox, f"cat > /tmp/probe.py <<'EOF'\n{probe}\nEOF\npython3 /tmp/probe.py")
    with open(f"{info['mount_dir']}/everything.txt", encoding="latin-1") as f:
        everything = f.read()  # read on the host: the test never hands the secret to the sandbox
    assert "SECRET_TOKEN_SHA256" in everything  # /proc/1/environ was read, and holds the hash
    assert "Permission denied" in everything  # the agent's memory is closed to the sandbox
    assert secret not in everything  # nothing any process in the sandbox can read holds it
    assert "calls still work" in stdout(shell(attacked, sandbox, "env; echo calls still work"))
