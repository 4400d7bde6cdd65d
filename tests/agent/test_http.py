"""Auth, health, routing, errors and keep-alive of the agent's HTTP layer."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys

import pytest
import requests

from .conftest import AGENT_DIR, TOKEN


def test_healthz_with_and_without_prefix(agent):
    for path in ("/fastapi/healthz", "/healthz"):
        response = agent.session.get(f"http://127.0.0.1:{agent.port}{path}", timeout=5)
        assert response.status_code == 200
        assert response.text == "OK"


def test_auth_is_required_everywhere_with_upstream_bodies(agent):
    for route in ("healthz", "mcp/list_tools", "workspace/exists?path=x", "no/such/route"):
        missing = requests.get(f"{agent.url}/{route}", timeout=5)
        assert missing.status_code == 403
        assert missing.json() == {"detail": "Missing or invalid authorization header"}
        basic = requests.get(f"{agent.url}/{route}", headers={"Authorization": f"Basic {TOKEN}"}, timeout=5)
        assert basic.json() == {"detail": "Missing or invalid authorization header"}
        wrong = requests.get(f"{agent.url}/{route}", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 403
        assert wrong.json() == {"detail": "Invalid secret token"}
    non_ascii = requests.get(
        f"{agent.url}/healthz", headers={"Authorization": "Bearer t\u00e9st".encode()}, timeout=5
    )
    assert non_ascii.json() == {"detail": "Invalid secret token"}


def test_unknown_route_and_method(agent):
    assert agent.get("nope").status_code == 404
    response = agent.session.delete(f"{agent.url}/healthz", timeout=5)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


def test_bad_bodies_are_400_with_detail(agent):
    for data in (b"{not json", b"[1, 2]", b""):
        response = agent.session.post(f"{agent.url}/tools/run_shell_command", data=data, timeout=5)
        assert response.status_code == 400, response.text
        assert "detail" in response.json()
    for body in (
        {},
        {"command": ""},
        {"command": 3},
        {"command": "true", "timeout": -1},
        {"command": "true", "timeout": "soon"},
    ):
        response = agent.post("tools/run_shell_command", body)
        assert response.status_code == 400, (body, response.text)


def test_keep_alive_two_requests_on_one_connection(agent):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    conn.request("GET", "/fastapi/healthz", headers=headers)
    first = conn.getresponse()
    assert first.read() == b"OK"
    sock = conn.sock
    conn.request(
        "POST",
        "/fastapi/tools/run_shell_command",
        body=json.dumps({"command": "echo again"}),
        headers=headers,
    )
    second = conn.getresponse()
    assert json.loads(second.read())["content"][0]["text"] == "again\n"
    assert conn.sock is sock, "the connection was not kept open"
    # An error answer must not desynchronise the connection either.
    conn.request("POST", "/fastapi/tools/run_shell_command", body=b"{bad", headers=headers)
    bad = conn.getresponse()
    assert bad.status == 400
    assert "detail" in json.loads(bad.read())
    conn.request("GET", "/fastapi/healthz", headers=headers)
    assert conn.getresponse().read() == b"OK"
    assert conn.sock is sock
    conn.close()


def test_connection_close_is_honoured(agent):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    conn.request(
        "GET", "/fastapi/healthz", headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"}
    )
    response = conn.getresponse()
    assert response.getheader("Connection") == "close"
    assert response.read() == b"OK"
    assert response.will_close
    conn.close()


def test_unauthorised_body_is_drained_so_the_connection_survives(agent):
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    conn.request(
        "POST",
        "/fastapi/tools/run_shell_command",
        body=json.dumps({"command": "touch pwned"}),
        headers={"Authorization": "Bearer wrong"},
    )
    denied = conn.getresponse()
    assert denied.status == 403
    denied.read()
    conn.request("GET", "/fastapi/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().read() == b"OK"
    conn.close()
    assert not (agent.workspace / "pwned").exists()


def test_malformed_requests_answer_json_and_close(agent):
    bad_length = (
        f"POST /fastapi/tools/run_shell_command HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: nope\r\n\r\n"
    ).encode()
    for raw, status in ((bad_length, b"400"), (b"BREW /pot HTTP/1.1\r\n\r\n", b"501")):
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
            sock.sendall(raw)
            data = b""
            while chunk := sock.recv(4096):  # ends because the server closes
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split()[1] == status, data  # 501 for an unknown method, as http.server answers
        assert b"Connection: close" in head
        assert body.startswith(b'{"detail":')


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the agent closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("raw,status", [
    (b"GET /fastapi/healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
    (b"GET /fastapi/healthz HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", b"431"),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
    (b"GET /fastapi/healthz HTTP/2.0\r\n\r\n", b"505"),
    (b"GET /fastapi/healthz\r\n\r\n", b"400"),
    (b"GET /fastapi/healthz HTTP/1.1\r\nNo-Colon\r\n\r\n", b"400"),
    (b"GET /fastapi/healthz HTTP/1.1\r\nX-A : b\r\n\r\n", b"400"),
    (b"GET /fastapi/healthz HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n", b"400"),
])
def test_what_cannot_be_parsed_is_refused_in_json_and_closed(agent, raw, status):
    head, _, body = _exchange(agent.port, raw).partition(b"\r\n\r\n")
    assert head.split()[1] == status, head
    assert b"Connection: close" in head
    assert body.startswith(b'{"detail":')


def test_http_1_0_closes_unless_kept_alive_and_header_names_are_any_case(agent):
    auth = f"aUtHoRiZaTiOn: Bearer {TOKEN}\r\n".encode()
    data = _exchange(agent.port, b"GET /fastapi/healthz HTTP/1.0\r\n" + auth + b"\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nOK"), data
    assert b"Connection: close" in data and b"\r\nDate: " in data
    # two requests on one connection, the second closing it
    keep = b"GET /fastapi/healthz HTTP/1.0\r\nConnection: keep-alive\r\n" + auth + b"\r\n"
    close = b"GET /fastapi/healthz HTTP/1.1\r\nConnection: close\r\n" + auth + b"\r\n"
    assert _exchange(agent.port, keep + close).count(b"HTTP/1.1 200 OK") == 2


def test_expect_100_continue_is_answered_before_the_body(agent):
    body = json.dumps({"command": "echo continued"}).encode()
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
        sock.sendall(b"POST /fastapi/tools/run_shell_command HTTP/1.1\r\nExpect: 100-continue\r\n"
                     b"Content-Type: application/json\r\nConnection: close\r\n"
                     + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b"continued" in data and data.startswith(b"HTTP/1.1 200 OK")


def test_the_agent_starts_without_the_standard_http_server():
    """http.server, http.client and the email package cost every sandbox ~2 MiB (docs/images.md)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, sandbox_agent.__main__, sandbox_agent.app, "
         "sandbox_agent.httpd; print(' '.join(sys.modules))"],
        env={"PYTHONPATH": str(AGENT_DIR)}, capture_output=True, text=True, check=True).stdout.split()
    assert not {"http.server", "http.client", "email", "ssl", "html"} & set(loaded)
