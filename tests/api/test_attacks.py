"""The holes found by attacking the API (docs/reliability.md, "Attacks the API withstands"), each
closed and checked here without Docker: the Flask app over a real Redis, the worker's agent client
against a hostile HTTP server on loopback, and the in-sandbox agent as a process."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import socketserver
import threading
import time

import pytest
import requests

from sandbox_api import create_app
from sandbox_core import states
from sandbox_core.desktop_paths import desktop_path
from sandbox_workers import secret
from sandbox_workers.agent_client import AgentClient, ReplyTooLarge

TOKEN = "s3cret"
DESKTOP = "d" * 32
NAME = "runtime_sandbox_container_attacked"
MiB = 1024 * 1024

#: What reached the agent from the desktop token alone before the fix (sent with --path-as-is).
TRAVERSALS = [
    "vnc/../workspace/file?path=private.txt",       # %3F decoded by werkzeug
    "vnc/%2E%2E/workspace/file?path=private.txt",
    "vnc/../workspace/list?path=.",
    "vnc/../watcher/git_logs",
    "vnc/../mcp/list_tools",
    "vnc/./../healthz",
    "vnc/..",
    "vnc/core/../../workspace/file",
    "vnc/core/rfb.js#x",
    "vnc/core\\..\\..\\workspace",
    "vnc/core/rfb.js\x00.html",
    "vnc/.hidden",
    "vnc/",
    "vnc//core/rfb.js",
    "vnc/core/%2e%2e/%2e%2e/workspace/file",
    "vnc/\u00e9",
    "workspace/file",
]


@pytest.fixture
def app(settings, store):
    from sandbox_api import auth

    auth._blocked.clear()
    app = create_app(settings.replace(BEARER_TOKEN=TOKEN, FLEET_MAX_BODY_MB=1), extensions=[])
    store.put(NAME, container_name=NAME, state=states.RUNNING, host="test-host", port=40001,
              session_id="attacked", desktop_token=DESKTOP, agent_secret="the-sandbox-secret")
    yield app
    auth._blocked.clear()


@pytest.fixture
def agent_calls(app, monkeypatch):
    """Every call the API makes into a sandbox, answered by a fake worker with a small file."""
    calls = []

    def agent_call(identity, op, timeout=None, touch=True, **payload):
        calls.append((op, payload))
        return {"status": 200, "headers": {"Content-Type": "text/html"}, "body": "PGh0bWw+"}

    monkeypatch.setattr(app.extensions["sandbox_fleet"], "agent_call", agent_call)
    return calls


# -- 1. the desktop token opens noVNC's files and nothing else ---------------------------------

@pytest.mark.parametrize("path", TRAVERSALS)
def test_desktop_token_cannot_leave_the_vnc_folder(app, agent_calls, path):
    client = app.test_client()
    # PATH_INFO as gunicorn hands it over: percent-decoded, dot segments as sent.
    response = client.get(f"/desktop/{NAME}/x", query_string={"password": DESKTOP},
                          environ_overrides={"PATH_INFO": f"/desktop/{NAME}/{path}"})
    assert response.status_code in (403, 404), response.data
    assert "detail" in response.json
    assert agent_calls == []


def test_desktop_files_still_load_through_the_desktop_op(app, agent_calls):
    client = app.test_client()
    response = client.get(f"/desktop/{NAME}/vnc/vnc_relay.html?password={DESKTOP}")
    assert response.status_code == 200 and response.data == b"<html>"
    assert client.get(f"/desktop/{NAME}/vnc/core/rfb.js").status_code == 200  # by its cookie
    assert agent_calls == [("desktop", {"path": "vnc/vnc_relay.html"}),
                           ("desktop", {"path": "vnc/core/rfb.js"})]
    assert app.test_client().get(f"/desktop/{NAME}/vnc/core/rfb.js?password=wrong").status_code == 403


def test_desktop_path_rule():
    for path in TRAVERSALS + ["vnc/a/" * 20 + "x", "vnc/" + "a" * 200]:
        assert desktop_path(path) is None, path
    for path in ("vnc/vnc_relay.html", "vnc/core/rfb.js", "vnc/app/images/icons/novnc-16x16.png",
                 "vnc/vendor/pako/lib/zlib/inflate.js", "vnc/app/locale/zh_CN.json"):
        assert desktop_path(path) == path


def test_the_worker_checks_the_desktop_path_again(monkeypatch):
    """The worker's ``desktop`` op refuses a bad path even if an API let one through."""
    from sandbox_core import jobs
    from sandbox_core.errors import NotFound
    from sandbox_workers import tasks

    asked = []

    class Agent:
        def address_of(self, name, store):
            return {"port": 1, "agent_secret": "t", "container_id": "c", "container_name": name}

        def request(self, record, method, path, **kwargs):
            asked.append((method, path))
            return type("R", (), {"status": 200, "headers": {}, "body": b"ok"})()

    replies = []
    ctx = type("Ctx", (), {"agent": Agent(), "store": type("S", (), {
        "reply": staticmethod(lambda job, body: replies.append(body))})()})()
    monkeypatch.setattr(tasks, "current", lambda: ctx)
    for path in TRAVERSALS:
        tasks.agent.run(name=NAME, op="desktop", timeout=5, path=path)
        with pytest.raises(NotFound):
            jobs.decode_reply(replies.pop())
    assert asked == []
    tasks.agent.run(name=NAME, op="desktop", timeout=5, path="vnc/core/rfb.js")
    assert jobs.decode_reply(replies.pop())["status"] == 200
    assert asked == [("GET", "/vnc/core/rfb.js")]


# -- 2. the body limit holds for chunked bodies too ---------------------------------------------

class CountingStream(io.RawIOBase):
    """A body of ``size`` bytes that counts what the app read of it."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        self.read_bytes += n
        return n


def chunked(app, route: str, size: int):
    """POST a body with no Content-Length, as gunicorn hands over a chunked one."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    stream = CountingStream(size)
    environ = EnvironBuilder(route, method="POST", headers={
        "Transfer-Encoding": "chunked", "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BufferedReader(stream), "wsgi.input_terminated": True})
    body, status, headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    return int(status.split()[0]), b"".join(body), stream


@pytest.mark.parametrize("route", [f"/proxy/{NAME}/workspace/file", "/call_tool", "/get_info"])
def test_chunked_body_over_the_limit_is_413_while_it_is_read(app, agent_calls, route):
    status, answer, stream = chunked(app, route, 200 * MiB)
    assert status == 413
    assert "FLEET_MAX_BODY_MB (1 MiB)" in json.loads(answer)["detail"]
    assert stream.read_bytes <= 2 * MiB  # stopped at the limit, not after the 200 MiB
    assert agent_calls == []


def test_chunked_body_under_the_limit_arrives_whole(app, agent_calls):
    status, _, _ = chunked(app, f"/proxy/{NAME}/workspace/file", MiB)
    assert status == 200
    (op, payload), = agent_calls
    assert op == "proxy" and base64.b64decode(payload["body"]) == b"x" * MiB


def test_sized_body_over_the_limit_is_413_with_a_detail(app):
    response = app.test_client().post(f"/proxy/{NAME}/workspace/file", data=b"x" * (2 * MiB),
                                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413
    assert "FLEET_MAX_BODY_MB (1 MiB)" in response.json["detail"]


# -- 3. the worker reads at most FLEET_MAX_AGENT_REPLY_MB of an agent's answer ------------------

class Hostile(http.server.BaseHTTPRequestHandler):
    """An 'agent' answering any POST/GET with ``size`` bytes, sized or chunked."""

    protocol_version = "HTTP/1.1"
    sent: list[int] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        size, sized = 64 * MiB, "sized" in self.path
        sent = 0
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if sized:
                self.send_header("Content-Length", str(size))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * (256 * 1024)
            while sent < size:
                self.wfile.write(block if sized else b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
            if not sized:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            Hostile.sent.append(sent)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hostile():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hostile.sent = []
    yield {"port": server.server_address[1], "agent_secret": "t", "container_id": "c",
           "container_name": "hostile"}
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["sized", "chunked"])
def test_agent_reply_over_the_cap_is_dropped_and_said(hostile, kind):
    client = AgentClient(max_reply=MiB)
    with pytest.raises(ReplyTooLarge) as caught:
        client.request(hostile, "GET", f"/{kind}", timeout=30)
    assert caught.value.status == 502
    assert "FLEET_MAX_AGENT_REPLY_MB (1 MiB)" in caught.value.detail
    result = client.call_tool(hostile, "run_shell_command", {"command": "yes"}, timeout=30)
    assert result["isError"] is True
    assert "FLEET_MAX_AGENT_REPLY_MB (1 MiB)" in result["content"][0]["text"]
    deadline = time.monotonic() + 30
    while len(Hostile.sent) < 2:  # the server notices the closed connection
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert all(sent < 64 * MiB for sent in Hostile.sent)  # nobody read the whole answer
    client.close()


# -- 4. failed tokens are limited without locking out the right one ----------------------------

def test_a_blocked_address_still_gets_in_with_the_right_token(settings, store):
    from sandbox_api import auth

    auth._blocked.clear()
    client = create_app(settings.replace(BEARER_TOKEN=TOKEN), extensions=[]).test_client()
    codes = [client.post("/list_session_keys", json={}, headers={
        "Authorization": f"Bearer guess{i}"}).status_code for i in range(25)]
    assert codes == [401] * 20 + [429] * 5
    right = client.post("/list_session_keys", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert client.post("/list_session_keys", json={}).status_code == 429  # missing token
    auth._blocked.clear()


def test_forwarded_for_is_believed_only_from_trusted_proxies(settings, store):
    from sandbox_api import auth

    def guesses(client, forwarded):
        return [client.post("/list_session_keys", json={}, headers={
            "Authorization": "Bearer guess", "X-Forwarded-For": forwarded(i)}).status_code
            for i in range(4)]

    auth._blocked.clear()
    limited = settings.replace(BEARER_TOKEN=TOKEN, FLEET_AUTH_FAILURES_PER_MINUTE=2)
    untrusting = create_app(limited, extensions=[]).test_client()
    # A guesser cannot pick a fresh address per try with a header nobody vouches for.
    assert guesses(untrusting, lambda i: f"203.0.113.{i}") == [401, 401, 429, 429]
    auth._blocked.clear()
    store.redis.flushdb()
    trusting = create_app(limited.replace(FLEET_TRUSTED_PROXIES=1), extensions=[]).test_client()
    assert guesses(trusting, lambda i: "198.51.100.7") == [401, 401, 429, 429]
    # ...behind the one trusted proxy, another client's address is its own
    assert guesses(trusting, lambda i: "198.51.100.8")[0] == 401
    auth._blocked.clear()


# -- 5. lone surrogates in JSON are 400, on every route -----------------------------------------

SURROGATE_BODIES = ['{"identity": "\\ud800"}', '{"\\udfff": 1}', '{"identity": "x", "args": ["\\udbff"]}',
                    b'{"identity": "\xed\xa0\x80"}']


def test_lone_surrogates_are_400_on_every_route(app, agent_calls):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    routes = [r for r in app.url_map.iter_rules() if "POST" in (r.methods or ())]
    assert len(routes) > 20
    for rule in routes:
        url = rule.rule.replace("<identity>", NAME).replace("<path:path>", "workspace/x")
        for body in SURROGATE_BODIES:
            response = client.post(url, data=body, content_type="application/json")
            assert response.status_code < 500, (url, body, response.data)
            if not url.startswith("/proxy/"):  # a proxied body is bytes for the agent, not parsed
                assert response.status_code == 400, (url, body, response.data)
                assert "detail" in response.json


def test_escaped_surrogate_pairs_are_fine(app):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    response = client.post("/get_info", data='{"identity": "\\ud83d\\ude00"}',
                           content_type="application/json")
    assert response.status_code == 404 and "\U0001f600" in response.json["detail"]


# -- 6. the sandbox's secret stays out of the sandbox --------------------------------------------

def test_fleet_images_get_only_the_hash_of_the_secret():
    class Backend:
        def __init__(self, labels):
            self.labels = labels

        def image_labels(self, image):
            return self.labels

    ours = secret.environment(Backend({secret.LABEL_AGENT_AUTH: "sha256"}), "img", "tok")
    assert ours == {"SECRET_TOKEN_SHA256": hashlib.sha256(b"tok").hexdigest()}
    assert secret.environment(Backend({}), "upstream", "tok") == {"SECRET_TOKEN": "tok"}
    container = type("C", (), {"labels": secret.labels("tok"), "environment": ours})()
    assert secret.token_of(container) == "tok"


def test_the_agent_accepts_the_hash_and_keeps_both_from_tools(tmp_path):
    from tests.agent.conftest import TOKEN as AGENT_TOKEN
    from tests.agent.conftest import Agent

    digest = hashlib.sha256(AGENT_TOKEN.encode()).hexdigest()
    agent = Agent(tmp_path, SECRET_TOKEN="", SECRET_TOKEN_SHA256=digest).start()
    try:
        out = agent.post("tools/run_shell_command", {"command": "env"})
        assert out.status_code == 200, out.text
        env = json.dumps(out.json())
        assert digest not in env and AGENT_TOKEN not in env and "SECRET_TOKEN" not in env
        wrong = requests.get(f"{agent.url}/healthz", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
        empty = requests.get(f"{agent.url}/healthz", headers={"Authorization": "Bearer "}, timeout=10)
        assert empty.status_code == 403
    finally:
        agent.stop()
