"""HTTP plumbing: request parsing, bodies (sized or chunked), JSON answers, keep-alive.

A small HTTP/1.1 server on ``socketserver``'s threads: every answer carries a Content-Length, so
clients keep one connection open across calls. Handlers get a :class:`Request` and return a
:class:`Response`; they raise :class:`~sandbox_agent.errors.HTTPError` for error answers.

Not ``http.server``: importing it (with ``http.client`` and the ``email`` package it parses
headers with, ``html``, ``mimetypes``, ...) cost every sandbox about 2 MiB of memory and a third of
the agent's start-up CPU, for a request line and a few headers (measured: docs/images.md).
"""

from __future__ import annotations

import contextlib
import logging
import socketserver
import sys
import time
from urllib.parse import parse_qs, urlsplit

from .errors import HTTPError, bad_request

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
MAX_LINE = 65536  # a request line or header line longer than this is refused (414 / 431)
MAX_HEADERS = 100
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"})
# Not http.HTTPStatus: importing ``http`` costs the agent 60 kB and 1.3 ms at every start.
REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 409: "Conflict", 410: "Gone", 413: "Content Too Large",
           414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
           422: "Unprocessable Content", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


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


class Headers:
    """A request's header fields: looked up by name in any case, listed as they came."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields
        self._by_name: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            self._by_name[key] = f"{self._by_name[key]}, {value}" if key in self._by_name else value

    def get(self, name: str, default: Any = None) -> Any:
        return self._by_name.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def items(self) -> list[tuple[str, str]]:
        return list(self._fields)


class BadRequestLine(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Handler(socketserver.StreamRequestHandler):
    """One connection: requests read and answered in turn until either side closes it."""

    # Headers and body go out in two writes when a body is streamed; with Nagle on, the body would
    # wait for the client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    dispatch: Dispatch  # set by make_server
    command = path = requestline = ""
    headers = Headers([])

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        self.close_connection = True
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            self._parse(line)
        except BadRequestLine as exc:
            self.send_error(exc.status, exc.detail)
            return
        except (TimeoutError, ConnectionError):  # idle past the timeout, or gone
            return
        if self.command not in METHODS:
            self.send_error(501, f"unsupported method {self.command!r}")
            return
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._handle()

    def _parse(self, line: bytes) -> None:
        """The request line and header fields; BadRequestLine for what cannot be answered."""
        if len(line) > MAX_LINE:
            raise BadRequestLine(414, "request line too long")
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            raise BadRequestLine(400, f"bad request line {self.requestline[:100]!r}")
        self.command, self.path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequestLine(505, f"unsupported HTTP version {version[:20]!r}")
        fields: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                raise BadRequestLine(431, "header line too long")
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(fields) >= MAX_HEADERS:
                raise BadRequestLine(431, "too many headers")
            name, colon, value = raw.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip() or raw[:1] in (b" ", b"\t"):
                raise BadRequestLine(400, f"malformed header line {raw[:100]!r}")
            fields.append((name, value.strip()))
        self.headers = Headers(fields)
        connection = self.headers.get("Connection", "").lower()
        self.close_connection = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection)

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

    def _send(self, response: Response) -> None:
        """The status line and headers, then the body: in one write when it is in memory."""
        try:
            head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}",
                    "Server: sandbox-agent", f"Date: {_http_date()}"]
            if response.content_type:
                head.append(f"Content-Type: {response.content_type}")
            head.append(f"Content-Length: {response.length}")
            if self.close_connection:
                head.append("Connection: close")
            data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            if self.command == "HEAD":
                self.wfile.write(data)
                return
            if response.stream is None:  # small: one packet; large: no copy of the body
                if len(response.body) <= CHUNK // 16:
                    self.wfile.write(data + response.body)
                else:
                    self.wfile.write(data)
                    self.wfile.write(response.body)
                return
            self.wfile.write(data)
            remaining = response.length  # a file that grows meanwhile must not overrun Content-Length
            while remaining > 0:
                chunk = response.stream.read(min(CHUNK, remaining))
                if not chunk:  # it shrank: the client cannot get what was promised
                    self.close_connection = True
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        finally:
            if response.stream is not None:
                response.stream.close()

    def send_error(self, code: int, message: str) -> None:
        """Malformed requests: JSON like every other answer, and close (the stream is out of step)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self._send(json_response({"detail": message}, code))


def _http_date() -> str:
    """The Date header's IMF-fixdate, independent of the locale."""
    t = time.gmtime()
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is routine; anything else is logged with its traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("connection from %s dropped", client_address)
        else:
            log.exception("error while serving %s", client_address)


def make_server(host: str, port: int, dispatch: Dispatch, idle_timeout: float) -> Server:
    handler = type("BoundHandler", (Handler,), {"dispatch": staticmethod(dispatch), "timeout": idle_timeout})
    return Server((host, port), handler)
