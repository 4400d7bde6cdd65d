"""MCP over HTTP: streamable-HTTP and (legacy) SSE servers, with the standard library only.

Two transports of :class:`~sandbox_agent.mcp_session.Session`, which keeps the request bookkeeping
(ids, waiters, timeouts, server requests); here is only how a message is sent and how answers come back:

- **streamable HTTP** (``{"type": "streamable_http", "url": ...}``): every message is a ``POST`` of
  JSON to the url; the answer is JSON, or an SSE stream (``text/event-stream``) whose ``data:``
  events carry the messages. ``Mcp-Session-Id`` from ``initialize`` is sent on every later request,
  and the session is ended with ``DELETE`` on close.
- **SSE** (``{"url": ...}`` without a streamable type): a ``GET`` opens an event stream whose first
  ``endpoint`` event names where to ``POST`` messages; answers arrive as ``message`` events.

``headers`` from the config are sent on every request. https works (OpenSSL is loaded then, not
before: the agent keeps it out of an idle process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from urllib.parse import urljoin, urlsplit

# http.client imports ssl when it can, which maps OpenSSL (libssl + libcrypto, about 4.4 MiB of
# RSS) into a process kept small; only an https server needs it, and _https loads it then.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
import http.client  # noqa: E402

from .mcp_session import MCPError, Transport  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

log = logging.getLogger("sandbox_agent.mcp")

PROTOCOL_HEADER = "MCP-Protocol-Version"


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if parts.scheme == "https":
        return _https(parts.hostname or "", parts.port or 443, timeout), target
    return http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout), target


def _https(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    """An HTTPS connection, loading ssl only now (kept out of the agent until then, above)."""
    if sys.modules.get("ssl", False) is None:
        del sys.modules["ssl"]
    import ssl

    context = ssl.create_default_context()

    class HTTPS(http.client.HTTPConnection):
        default_port = 443

        def connect(self) -> None:
            super().connect()
            self.sock = context.wrap_socket(self.sock, server_hostname=host)

    return HTTPS(host, port, timeout=timeout)


def _events(response: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """(event, data) of a text/event-stream, as they arrive."""
    event, data = "message", []
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


class _HttpTransport(Transport):
    def __init__(self, name: str, config: Mapping[str, Any], timeout: float) -> None:
        super().__init__(name)
        self.url = str(config["url"])
        self.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        self.timeout = timeout
        self._receive: Callable[[bytes | str], None] = lambda raw: None

    def describe(self) -> str:
        return self.url

    def _unreachable(self, url: str, exc: Exception) -> MCPError:
        return MCPError(f"MCP server {self.name!r} at {url} is not answering: {exc}")


class StreamableHttpTransport(_HttpTransport):
    """MCP's streamable HTTP transport: every message is a POST."""

    def __init__(self, name: str, config: Mapping[str, Any], timeout: float) -> None:
        super().__init__(name, config, timeout)
        self._session: str | None = None
        self._open_ok = False

    @property
    def alive(self) -> bool:
        return self._open_ok

    def open(self, receive: Callable[[bytes | str], None], closed: Callable[[], None]) -> None:
        self._receive = receive
        self._session = None
        self._open_ok = True

    def send(self, message: dict[str, Any]) -> None:
        """POST one message; whatever comes back (JSON or an event stream) is received before this returns."""
        headers = {**self.headers, "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream"}
        if self._session:
            headers["Mcp-Session-Id"] = self._session
        if self.protocol:
            headers[PROTOCOL_HEADER] = self.protocol
        conn, target = _connection(self.url, self.timeout)
        try:
            conn.request("POST", target, body=json.dumps(message).encode(), headers=headers)
            response = conn.getresponse()
            session = response.getheader("Mcp-Session-Id")
            if session:
                self._session = session
            if response.status == 404 and self._session:
                self._open_ok = False
                raise MCPError(f"MCP server {self.name!r}: the session expired")
            if response.status >= 400:
                body = response.read(2000).decode("utf-8", "replace")
                raise MCPError(f"MCP server {self.name!r} answered HTTP {response.status}: {body}")
            kind = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                for _event, data in _events(response):
                    self._receive(data)
            elif response.status != 202 and kind == "application/json":
                self._receive(response.read())
            else:
                response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(self.url, exc) from None
        finally:
            conn.close()

    def close(self) -> None:
        session, self._session, self._open_ok = self._session, None, False
        if not session:
            return
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn, target = _connection(self.url, 5)
            conn.request("DELETE", target, headers={**self.headers, "Mcp-Session-Id": session})
            conn.getresponse().read()
            conn.close()


class SseTransport(_HttpTransport):
    """The legacy HTTP+SSE transport: answers come on a GET event stream, messages go as POSTs."""

    def __init__(self, name: str, config: Mapping[str, Any], timeout: float) -> None:
        super().__init__(name, config, timeout)
        self._endpoint: str | None = None
        self._stream: http.client.HTTPConnection | None = None
        self._reader: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def open(self, receive: Callable[[bytes | str], None], closed: Callable[[], None]) -> None:
        self._receive = receive
        conn, target = _connection(self.url, self.timeout)
        try:
            conn.request("GET", target, headers={**self.headers, "Accept": "text/event-stream"})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(self.url, exc) from None
        if response.status != 200:
            conn.close()
            raise MCPError(f"MCP server {self.name!r} answered HTTP {response.status} to its event stream")
        if conn.sock is not None:
            conn.sock.settimeout(None)  # the stream stays open; requests have their own timeouts
        self._stream = conn
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read_events, args=(response, ready, closed),
                                        name=f"mcp-sse-{self.name}", daemon=True)
        self._reader.start()
        if not ready.wait(self.timeout) or self._endpoint is None:
            self.close()
            raise MCPError(f"MCP server {self.name!r} sent no endpoint event")

    def _read_events(self, response: http.client.HTTPResponse, ready: threading.Event,
                     closed: Callable[[], None]) -> None:
        try:
            for event, data in _events(response):
                if event == "endpoint":
                    self._endpoint = urljoin(self.url, data.strip())
                    ready.set()
                elif event == "message":
                    self._receive(data)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            ready.set()
            log.info("MCP server %r closed its event stream", self.name)
            closed()

    def send(self, message: dict[str, Any]) -> None:
        if not self._endpoint or not self.alive:
            raise MCPError(f"MCP server {self.name!r} is not connected")
        conn, target = _connection(self._endpoint, self.timeout)
        try:
            conn.request("POST", target, body=json.dumps(message).encode(),
                         headers={**self.headers, "Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read(2000)
            if response.status >= 400:
                raise MCPError(f"MCP server {self.name!r} answered HTTP {response.status}: "
                               f"{body.decode('utf-8', 'replace')}")
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(self._endpoint, exc) from None
        finally:
            conn.close()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                if stream.sock is not None:
                    stream.sock.shutdown(2)
            stream.close()
        self._endpoint = None
