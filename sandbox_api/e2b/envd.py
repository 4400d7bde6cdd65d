"""envd over the fleet: the process and filesystem services (Connect), ``/files`` and ``/health``.

Reached with ``E2B_SANDBOX_URL`` pointing at this API: every call names its sandbox in
``E2b-Sandbox-Id`` and carries that sandbox's ``X-Access-Token``. Files move in CHUNK-sized
parts, each one agent call, so neither this process nor the broker holds a whole large file.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox_core.errors import BadRequest, NotFound, SandboxError
from sandbox_core.fleet import Fleet

from .. import auth, openapi
from . import connect, rpc_streams, sandboxes, streams

bp = Blueprint("e2b_envd", __name__)

CHUNK = 4 << 20
MAX_STREAM = 3600.0  # the agent job's own limit
INPUT_TIMEOUT = 60.0  # a StreamInput without Connect-Timeout-Ms (the SDK's own default)
MAX_JSON = 4 << 20

#: Connect methods served by one agent call: (service, method) -> agent route.
UNARY = {
    ("process.Process", "List"): "envd/process/list",
    ("process.Process", "SendSignal"): "envd/process/signal",
    ("process.Process", "SendInput"): "envd/process/input",
    ("process.Process", "CloseStdin"): "envd/process/close_stdin",
    ("process.Process", "Update"): "envd/process/update",
    ("filesystem.Filesystem", "Stat"): "envd/fs/stat",
    ("filesystem.Filesystem", "ListDir"): "envd/fs/list_dir",
    ("filesystem.Filesystem", "MakeDir"): "envd/fs/make_dir",
    ("filesystem.Filesystem", "Move"): "envd/fs/move",
    ("filesystem.Filesystem", "Remove"): "envd/fs/remove",
    ("filesystem.Filesystem", "CreateWatcher"): "envd/watch/create",
    ("filesystem.Filesystem", "GetWatcherEvents"): "envd/watch/events",
    ("filesystem.Filesystem", "RemoveWatcher"): "envd/watch/remove",
}


class TooManyFailures(SandboxError):
    status = 429


class SandboxGone(SandboxError):
    """What E2B's proxy answers for a sandbox that is not running (the SDK reads the words)."""

    status = 502


def fleet() -> Fleet:
    return current_app.extensions["sandbox_fleet"]


def target(token_optional: bool = False) -> dict:
    """The sandbox the call names, checked against its access token, running. The code
    interpreter SDK sends no token with its /contexts calls (``token_optional``); a wrong one
    is refused there too."""
    sandbox_id = request.headers.get("E2b-Sandbox-Id", "")
    try:
        record = sandboxes.find(fleet(), sandbox_id)
    except NotFound:
        raise SandboxGone(f"The sandbox {sandbox_id} was not found") from None
    token = request.headers.get("X-Access-Token")
    if token is not None or not token_optional:
        client = request.remote_addr or "unknown"
        if auth._is_blocked(client):
            raise TooManyFailures(f"too many failed authentications from this address; try "
                                  f"again in {auth.WINDOW} seconds")
        try:
            sandboxes.authorize(record, token)
        except sandboxes.Unauthorized:
            # Wrong tokens count with wrong API keys (FLEET_AUTH_FAILURES_PER_MINUTE).
            auth._count_failure(client, fleet().settings.FLEET_AUTH_FAILURES_PER_MINUTE)
            raise
    if record.get("e2b_paused"):
        raise SandboxGone(f"The sandbox {sandbox_id} is paused: it was not found running; "
                          "connect to it to resume it")
    return record


def small_body() -> bytes:
    data = request.stream.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise BadRequest(f"the request body is over {MAX_JSON >> 20} MiB")
    return data


def small_json() -> dict:
    import json

    data = small_body()
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise BadRequest("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


# -- Connect RPC ---------------------------------------------------------------------------------

@bp.route("/<any('process.Process', 'filesystem.Filesystem'):service>/<method>", methods=["POST"])
@openapi.doc(summary="envd's Connect RPC (process and filesystem services)", tags=["e2b envd"],
             description="Unary: " + ", ".join(f"{s}/{m}" for s, m in UNARY) + ". Server "
             "streams (application/connect+json): " + ", ".join(
                 f"{s}/{m}" for s, m in rpc_streams.SERVER_STREAMS) + ". Client stream: "
             + ", ".join(f"{s}/{m}" for s, m in rpc_streams.CLIENT_STREAMS) + ".",
             responses={200: "the method's answer", 400: "a bad message",
                        404: "no such process, path or watcher", 501: "a method not served",
                        502: "the sandbox is not running"})
def rpc(service: str, method: str):
    if (service, method) in rpc_streams.SERVER_STREAMS:
        timeout = _stream_timeout()
        return rpc_streams.server_stream(fleet(), method, target, small_body(), timeout)
    if (service, method) in rpc_streams.CLIENT_STREAMS:
        read, set_read_timeout = _body_reader()
        return rpc_streams.stream_input(fleet(), target, read, set_read_timeout,
                                        _stream_timeout(default=INPUT_TIMEOUT))
    route = UNARY.get((service, method))
    if route is None:
        raise Unimplemented(f"{service}/{method} is not served by this fleet (docs/e2b.md)")
    record = target()
    return jsonify(streams.call_json(fleet(), record, route, small_json()))


def _stream_timeout(default: float = MAX_STREAM) -> float:
    return connect.timeout_seconds(request.headers.get("Connect-Timeout-Ms"), default, MAX_STREAM)


def _body_reader() -> tuple[Callable[[int], bytes], Callable[[float | None], None]]:
    """``read(n)`` that returns as soon as n bytes of the request body are in, and how to give
    those reads a deadline. gunicorn's ``wsgi.input`` reads at least 1 KiB ahead, so a small
    envelope would wait for the next ones or the body's end: its own chunk (or length) reader
    returns at once. gunicorn hands the connection's socket to the app for the deadline; a
    test client's body is all there, so its reads cannot block."""
    body = request.environ.get("wsgi.input")
    reader, buffered = getattr(body, "reader", None), getattr(body, "buf", None)
    sock = request.environ.get("gunicorn.socket")
    if reader is None or buffered is None or buffered.tell() or sock is None:
        return request.stream.read, lambda seconds: None
    return reader.read, sock.settimeout


class Unimplemented(SandboxError):
    status = 501


# -- /files and /health --------------------------------------------------------------------------

@bp.route("/files", methods=["GET"])
def download():
    record, f = target(), fleet()  # the parts below are read after the view returned
    path = _path()
    first = _read(f, record, path, 0)

    def parts() -> Iterator[bytes]:
        chunk, offset = first, 0
        while True:
            yield chunk
            offset += len(chunk)
            if len(chunk) < CHUNK:
                return
            chunk = _read(f, record, path, offset)

    return Response(parts(), status=200, content_type="application/octet-stream")


def _read(f: Fleet, record: dict, path: str, offset: int) -> bytes:
    reply = streams.call(f, record, "GET", "envd/files",
                         query=urlencode({"path": path, "offset": offset, "length": CHUNK}))
    if reply.status != 200:
        raise streams.agent_error(reply.status, reply.detail)
    return reply.body


@bp.route("/files", methods=["POST"])
def upload():
    record = target()
    kind = (request.mimetype or "").lower()
    if kind == "multipart/form-data":
        parts = request.files.getlist("file") or list(request.files.values())
        if not parts:
            raise BadRequest("the multipart body has no file part")
        single = request.args.get("path")
        if single and len(parts) > 1:
            raise BadRequest("path names one file; the body has several")
        written = [_write(record, single or part.filename or "", _pieces(part.stream))
                   for part in parts]
    else:
        body: Iterator[bytes] = _pieces(request.stream)
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = _gunzip(body)
        written = [_write(record, _path(), body)]
    return jsonify(written)


def _path() -> str:
    path = request.args.get("path", "")
    if not path:
        raise BadRequest("path is required")
    return path


def _pieces(stream) -> Iterator[bytes]:
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def _gunzip(parts: Iterator[bytes]) -> Iterator[bytes]:
    inflate = zlib.decompressobj(wbits=31)
    for part in parts:
        try:
            data = inflate.decompress(part, CHUNK)
            while data:
                yield data
                data = inflate.decompress(inflate.unconsumed_tail, CHUNK)
        except zlib.error as e:
            raise BadRequest(f"the gzip body is corrupt: {e}") from None


def _write(record: dict, path: str, parts: Iterator[bytes]) -> dict:
    """Write a file in CHUNK-sized agent calls (regrouped: a gzip body inflates unevenly)."""
    if not path:
        raise BadRequest("every file part needs a path (its filename)")
    offset, buffer, info = 0, b"", None
    for part in parts:
        buffer += part
        while len(buffer) >= CHUNK:
            info = _put(record, path, offset, buffer[:CHUNK])
            offset, buffer = offset + CHUNK, buffer[CHUNK:]
    if buffer or info is None:
        info = _put(record, path, offset, buffer)
    return info


def _put(record: dict, path: str, offset: int, data: bytes) -> dict:
    reply = streams.call(fleet(), record, "PUT", "envd/files", raw=data or b"",
                         query=urlencode({"path": path, "offset": offset}))
    if reply.status != 200:
        raise streams.agent_error(reply.status, reply.detail)
    return reply.json()


@bp.route("/health", methods=["GET"])
def health():
    sandbox_id = request.headers.get("E2b-Sandbox-Id", "")
    try:
        record = sandboxes.find(fleet(), sandbox_id)
    except NotFound:
        raise SandboxGone(f"The sandbox {sandbox_id} was not found") from None
    if record.get("e2b_paused"):
        raise SandboxGone(f"The sandbox {sandbox_id} is paused: it was not found running")
    return Response(status=204)


def rpc_error(e: SandboxError):
    """Unary Connect errors: ``{code, message}`` with the HTTP status of the code."""
    status = connect.STATUSES.get(connect.code_of(e.status), 500)
    return jsonify(connect.error(e.status, e.detail)), status


def rest_error(e: SandboxError):
    """envd's REST errors (``/files``, ``/health``): ``{code: <status>, message}``."""
    return jsonify(code=e.status, message=e.detail), e.status

