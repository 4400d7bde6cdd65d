"""The desktop of a GUI sandbox, on the agent's port: noVNC's pages and the VNC WebSocket.

``GET /vnc/<file>`` serves noVNC's static files from ``NOVNC_DIR`` (the gui image sets it), and
``GET /websockify`` (a WebSocket upgrade) is bridged byte for byte to the VNC server on
``127.0.0.1:VNC_PORT``: x11vnc answers the WebSocket handshake itself (libvncserver), so no
websockify process is needed. Both sit behind the agent's own auth like every route; the fleet
reaches them with the sandbox's secret and gives browsers a desktop-only token instead.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import re
import socket
import threading

from .errors import HTTPError
from .httpd import Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .httpd import Handler, Request

log = logging.getLogger("sandbox_agent.desktop")

CHUNK = 64 * 1024
#: Request headers not passed to the VNC server: the sandbox's secret stays in the agent.
_DROP = {"authorization", "x-agentrun-session-id", "x-agentscope-runtime-session-id"}
#: The fleet's rule for desktop paths (sandbox_core/desktop_paths.py), minus the ``vnc/`` prefix.
_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,15}")


def static_file(root: str | None, subpath: str) -> Response:
    """A file under noVNC's folder; 404 for anything else (no listing, no way out of it)."""
    if not root or not os.path.isdir(root):
        raise HTTPError(404, "This sandbox has no desktop.")
    if not _FILE.fullmatch(subpath):  # noVNC's names only: no dot segment, no escape of any kind
        raise HTTPError(404, "Not Found")
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, subpath.lstrip("/")))
    if not target.startswith(base + os.sep) or not os.path.isfile(target):
        raise HTTPError(404, "Not Found")
    content_type = mimetypes.guess_type(target)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith("javascript"):
        content_type += "; charset=utf-8"
    f = open(target, "rb")  # noqa: SIM115 (closed by the response after streaming)
    return Response(200, content_type=content_type, stream=f, length=os.fstat(f.fileno()).st_size)


def websocket_bridge(request: Request, vnc_port: int | None) -> Response:
    """Hand the connection over to the VNC server once it accepts the WebSocket handshake."""
    if not vnc_port:
        raise HTTPError(404, "This sandbox has no desktop.")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise HTTPError(400, "Expected a WebSocket upgrade.")
    try:
        upstream = socket.create_connection(("127.0.0.1", vnc_port), timeout=5)
    except OSError as exc:
        raise HTTPError(502, f"The desktop's VNC server is not answering: {exc}") from None
    response = Response(101)
    response.hijack = lambda handler: _splice(handler, upstream)
    return response


def _splice(handler: Handler, upstream: socket.socket) -> None:
    """Send the upgrade request on, then copy bytes both ways until either side closes."""
    lines = [handler.requestline.replace("/fastapi/websockify", "/websockify", 1)]
    lines += [f"{k}: {v}" for k, v in handler.headers.items() if k.lower() not in _DROP]
    client = handler.connection
    try:
        upstream.settimeout(None)
        client.settimeout(None)
        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        pump = threading.Thread(target=_copy_to_client, args=(upstream, handler), daemon=True,
                                name="vnc-to-client")
        pump.start()
        while True:
            data = handler.rfile.read1(CHUNK)  # bytes already buffered come first
            if not data:
                break
            upstream.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
        upstream.close()
    log.info("desktop WebSocket closed")


def _copy_to_client(upstream: socket.socket, handler: Handler) -> None:
    try:
        while True:
            data = upstream.recv(CHUNK)
            if not data:
                break
            handler.wfile.write(data)
            handler.wfile.flush()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)
