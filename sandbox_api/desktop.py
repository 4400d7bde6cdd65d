"""``/desktop/<id>/<path>``: a GUI sandbox's noVNC pages, for a browser, through the fleet.

The SDK's ``GuiSandbox.desktop_url`` is ``/desktop/<id>/vnc/vnc_relay.html?password=<token>``, where
the token is the record's ``desktop_token`` (what ``/get_info`` shows as ``runtime_token``), never
the sandbox's own secret. The route is outside BEARER_TOKEN (as upstream: a browser cannot send that
header) and is authorised by that token instead: from ``?password=``, or from the cookie the first
authorised answer sets for ``/desktop/<id>`` so the page's own scripts and images load too. Only
``GET`` of noVNC's files under ``vnc/`` is carried, by the owning host's worker, as the ``desktop``
operation: the path is checked after decoding (sandbox_core.desktop_paths) and again by the
worker, so ``..``, ``%3F`` and the like cannot reach the agent's other routes.

``WS /desktop/<id>?password=<token>`` is the VNC stream the page opens. The API takes the
connection over from gunicorn, opens the agent's ``/websockify`` with the sandbox's secret, and
copies bytes both ways; the WebSocket handshake and frames are x11vnc's and the browser's own.
Tool calls go through the worker's queue, but a long-lived stream does not fit a job, so the API
dials the agent itself: on the host's loopback for a Docker sandbox, which only an API process of
the sandbox's own host can (``FLEET_HOST_NAME`` is the record's host, as with
``runtime-sandbox-server`` on one machine; another answers 502 saying where the sandbox is), and at
its plain-HTTP address for a pod (any API that reaches the cluster). A cloud endpoint is not
dialled (501). See docs/types/gui.md.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import selectors
import socket
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox_core import netpath
from sandbox_core.desktop_paths import desktop_path
from sandbox_core.errors import NotFound, SandboxError

from .openapi import ErrorReply, doc

log = logging.getLogger(__name__)

bp = Blueprint("desktop", __name__)

COOKIE = "sandbox_desktop_token"
_KEEP_BACK = {"content-type", "etag", "last-modified"}
#: Browser headers the VNC server needs for its WebSocket handshake; nothing else is passed on.
_WS_HEADERS = ("Host", "Origin", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
               "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "User-Agent")
#: A VNC client asks for screen updates all the time: this long without a byte, the stream is dead.
STREAM_IDLE_TIMEOUT = 600
CHUNK = 64 * 1024
_PASSWORD = {"name": "password", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "the desktop token (get_info's runtime_token); later requests use "
                            "the cookie it sets"}


def _authorised(record: dict) -> str | None:
    """The token the request proves it holds, or None."""
    expected = record.get("desktop_token") or ""
    for given in (request.args.get("password"), request.cookies.get(COOKIE)):
        if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
            return given
    return None


@bp.route("/desktop/<identity>/<path:path>", methods=["GET"])
@doc(summary="A GUI sandbox's noVNC files (vnc/...), authorised by its desktop token",
     tags=["desktop"], parameters=[_PASSWORD],
     responses={200: "the file", 403: ErrorReply, 404: ErrorReply, 502: ErrorReply})
def desktop(identity: str, path: str) -> Response:
    fleet = current_app.extensions["sandbox_fleet"]
    record = fleet.live_record(identity)
    token = _authorised(record)
    if token is None:
        return jsonify(detail="desktop access needs the sandbox's desktop token (?password=)"), 403
    if desktop_path(path) is None:
        raise NotFound("no such desktop file: the desktop token opens only noVNC's files under vnc/")
    try:
        reply = fleet.agent_call(record["container_name"], "desktop", touch=False, path=path)
    except SandboxError as e:
        if e.status >= 500:
            e.status, e.detail = 502, f"Upstream request failed: {e.detail}"
        raise
    headers = {k: v for k, v in reply["headers"].items() if k.lower() in _KEEP_BACK}
    headers["Cache-Control"] = "private, no-store"
    response = Response(base64.b64decode(reply["body"]), status=reply["status"], headers=headers)
    if request.args.get("password"):
        response.set_cookie(COOKIE, token, path=f"/desktop/{identity}", httponly=True,
                            samesite="Strict", secure=request.is_secure)
    return response


@bp.route("/desktop/<identity>", methods=["GET"], websocket=True)  # werkzeug matches ws:// apart
@doc(summary="The desktop's VNC stream (a WebSocket upgrade), on the sandbox's own host",
     tags=["desktop"], parameters=[_PASSWORD],
     responses={101: "switching to the VNC WebSocket", 400: ErrorReply, 403: ErrorReply,
                404: ErrorReply, 501: ErrorReply, 502: ErrorReply})
def desktop_stream(identity: str) -> Response:
    fleet = current_app.extensions["sandbox_fleet"]
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return jsonify(detail="this is the desktop's VNC WebSocket: open vnc/vnc_relay.html"), 400
    record = fleet.live_record(identity)
    if _authorised(record) is None:
        return jsonify(detail="desktop access needs the sandbox's desktop token (?password=)"), 403
    client = request.environ.get("gunicorn.socket")
    if client is None:
        return jsonify(detail="the desktop stream needs the API under gunicorn"), 501
    target = _stream_target(record, fleet.settings.FLEET_HOST_NAME,
                            pods=fleet.settings.CONTAINER_DEPLOYMENT == "k8s")
    if isinstance(target, Response):
        return target
    try:
        upstream = netpath.connect(target, record.get("agent_interface"), timeout=5)
    except OSError as e:
        return jsonify(detail=f"Upstream request failed: {e}"), 502
    head = ["GET /fastapi/websockify HTTP/1.1"]
    head += [f"{name}: {request.headers[name]}" for name in _WS_HEADERS if name in request.headers]
    head.append(f"Authorization: Bearer {record['agent_secret']}")
    try:
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        log.info("desktop stream of %s opened", record["container_name"])
        _splice(client, upstream)
    finally:
        upstream.close()
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)
    log.info("desktop stream of %s closed", record["container_name"])
    return _Hijacked()


def _stream_target(record: dict, this_host: str, pods: bool) -> tuple[str, int] | Response:
    """Where to open the sandbox's WebSocket: its agent's plain-HTTP address, or
    127.0.0.1:port. A pod's address (``pods``) is reached from any API of the cluster; a
    container's, on its bridge or a host port, only from its own host. A cloud endpoint (TLS,
    behind the service's gateway) is not dialled."""
    name = record["container_name"]
    agent_url = record.get("agent_url")
    parts = urlsplit(agent_url) if agent_url else None
    if parts and (parts.scheme != "http" or not parts.hostname or parts.path.strip("/")):
        response = jsonify(detail=f"the desktop stream of {name} is not served: its agent is "
                                  f"a cloud endpoint ({parts.scheme}://{parts.hostname})")
        response.status_code = 501
        return response
    if parts and pods:
        return parts.hostname, parts.port or 80
    if record.get("host") != this_host or not (parts or record.get("port")):
        response = jsonify(detail=f"the desktop stream of {name} is served by the API on its host "
                                  f"{record.get('host')!r}")
        response.status_code = 502
        return response
    return (parts.hostname, parts.port or 80) if parts else ("127.0.0.1", int(record["port"]))


class _Hijacked(Response):
    """The connection was taken over and is closed: gunicorn must write nothing more on it
    (raising StopIteration makes it close the connection quietly, as flask-sock does)."""

    def __call__(self, environ, start_response):
        raise StopIteration()


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes or the stream is idle too long."""
    a.settimeout(STREAM_IDLE_TIMEOUT)
    b.settimeout(STREAM_IDLE_TIMEOUT)
    peer = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ)
        selector.register(b, selectors.EVENT_READ)
        while True:
            ready = selector.select(STREAM_IDLE_TIMEOUT)
            if not ready:
                return
            for key, _ in ready:
                try:
                    data = key.fileobj.recv(CHUNK)
                    if not data:
                        return
                    peer[key.fileobj].sendall(data)
                except OSError:
                    return
