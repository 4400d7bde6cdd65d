"""HTTP plumbing: request bodies (sized or chunked), JSON answers, keep-alive.

``http.server.ThreadingHTTPServer`` with ``protocol_version = "HTTP/1.1"``: every answer carries a
Content-Length, so clients keep one connection open across calls. Handlers get a :class:`Request`
and return a :class:`Response`; they raise :class:`~sandbox_agent.errors.HTTPError` for error answers.
"""

from __future__ import annotations

import contextlib
import logging
import socketserver
import sys
import time

# The agent serves plain HTTP and opens no TLS connection: keep http.client from importing ssl,
# which maps OpenSSL (libssl + libcrypto, about 4.4 MiB of RSS) into a process kept under 15 MiB.
# Code that needs TLS inside the agent process must drop this line (or import ssl before this module).
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

from .errors import HTTPError, bad_request  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO

    Dispatch = Callable[["Request"], "Response"]

log = logging.getLogger("sandbox_agent.http")

CHUNK = 1 << 20
MAX_BUFFERED_BODY = 1 << 30  # a JSON or multipart body is read into memory up to this size
DRAIN_LIMIT = 1 << 20  # an unread body up to this size is drained to keep the connection; else close
QUIET_PATHS = ("/healthz", "/fastapi/healthz")  # polled every second: logged at DEBUG only


class Request:
    """One HTTP request. The body is read on demand: whole, or streamed with :meth:`iter_body`."""

    def __init__(self, handler: Handler, method: str, path: str, query: dict[str, list[str]]) -> None:
        self._handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.headers = handler.headers
        self._body: bytes | None = None
        self._started = False
        self.finished = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body in chunks (Content-Length or chunked transfer coding)."""
        if self._started:
            raise RuntimeError("request body already consumed")
        self._started = True
        rfile = self._handler.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from _iter_chunked(rfile)
        else:
            yield from _read_exactly(rfile, _content_length(self.headers))
        self.finished = True

    def body(self) -> bytes:
        if self._body is None:
            parts: list[bytes] = []
            size = 0
            for part in self.iter_body():
                size += len(part)
                if size > MAX_BUFFERED_BODY:
                    raise HTTPError(413, "request body too large")
                parts.append(part)
            self._body = b"".join(parts)
        return self._body

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; 400 if it is not one."""
        import json  # on first use: a pooled sandbox that only answers healthz never loads it

        raw = self.body()
        if not raw.strip():
            raise bad_request("request body must be a JSON object")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad_request(f"invalid JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise bad_request("request body must be a JSON object")
        return data

    def discard_body(self) -> bool:
        """Drain what is left of a small body; False when the connection must close instead."""
        try:
            if self.finished or (not self._started and not _has_body(self.headers)):
                return True
            if self._started or _content_length(self.headers) > DRAIN_LIMIT:
                return False
            for _ in self.iter_body():
                pass
        except (HTTPError, OSError, ValueError):  # a malformed or broken body: close
            return False
        return True


class Response:
    """An answer: bytes, or an open file streamed with a known length."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str | None = None,
                 stream: BinaryIO | None = None, length: int = 0) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.stream = stream
        self.length = length if stream is not None else len(body)
        #: Set to take the connection over instead of answering (the desktop's WebSocket bridge).
        self.hijack: Callable[[Handler], None] | None = None


def json_response(data: Any, status: int = 200) -> Response:
    import json  # on first use, as in Request.json

    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, "application/json")


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


def _has_body(headers: Any) -> bool:
    return "Transfer-Encoding" in headers or _content_length(headers) > 0


def _content_length(headers: Any) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise bad_request("invalid Content-Length") from None
    if value < 0:
        raise bad_request("invalid Content-Length")
    return value


def _read_exactly(rfile: BinaryIO, size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of the body, in pieces of at most CHUNK."""
    while size > 0:
        data = rfile.read(min(CHUNK, size))
        if not data:
            raise bad_request("request body ended early")
        size -= len(data)
        yield data


def _iter_chunked(rfile: BinaryIO) -> Iterator[bytes]:
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise bad_request("malformed chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise bad_request("malformed chunk size") from None
        if size == 0:
            while rfile.readline(8192).strip():  # trailers
                pass
            return
        yield from _read_exactly(rfile, size)
        rfile.readline(8)  # CRLF after the chunk


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed
    # ACK (40 ms on Linux) on every keep-alive request. TCP_NODELAY sends both at once.
    disable_nagle_algorithm = True
    server_version = "sandbox-agent"
    sys_version = ""
    dispatch: Dispatch  # set by make_server

    def _handle(self) -> None:
        started = time.monotonic()
        url = urlsplit(self.path)
        request = Request(self, self.command, url.path, parse_qs(url.query, keep_blank_values=True))
        try:
            response = self.dispatch(request)
        except HTTPError as exc:
            response = json_response({"detail": exc.detail}, exc.status)
        except Exception as exc:  # a bug: answer JSON, never a traceback page
            log.exception("unhandled error on %s %s", self.command, url.path)
            response = json_response({"detail": f"Internal error: {exc.__class__.__name__}: {exc}"}, 500)
        if response.hijack is not None:
            self.close_connection = True
            log.info("%s %s upgraded", self.command, url.path)
            response.hijack(self)
            return
        if not request.discard_body():
            self.close_connection = True
        self._send(response)
        level = logging.DEBUG if url.path in QUIET_PATHS else logging.INFO
        log.log(level, "%s %s %d %.1fms", self.command, url.path, response.status,
                (time.monotonic() - started) * 1000)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(response.length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if response.stream is None:
                if response.body:
                    self.wfile.write(response.body)
                return
            remaining = response.length  # a file that grows meanwhile must not overrun Content-Length
            while remaining > 0:
                data = response.stream.read(min(CHUNK, remaining))
                if not data:  # it shrank: the client cannot get what was promised
                    self.close_connection = True
                    break
                self.wfile.write(data)
                remaining -= len(data)
        finally:
            if response.stream is not None:
                response.stream.close()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests: JSON like every other answer, and close (the stream is out of step).
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send(json_response({"detail": message or explain or "Bad request"}, code))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (BaseHTTPRequestHandler API)
        log.debug(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks socket.getfqdn(), a reverse DNS lookup that can stall start-up in
        # a container with no resolver; the name is only used for CGI.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is routine; anything else is logged with its traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("connection from %s dropped", client_address)
        else:
            log.exception("error while serving %s", client_address)


def make_server(host: str, port: int, dispatch: Dispatch, idle_timeout: float) -> Server:
    handler = type("BoundHandler", (Handler,), {"dispatch": staticmethod(dispatch), "timeout": idle_timeout})
    return Server((host, port), handler)
