"""One MCP client session: JSON-RPC 2.0 over a transport (``mcp_stdio.py``, ``mcp_http.py``).

The session owns what every transport shares: request ids, the waiters for their answers,
timeouts (with ``notifications/cancelled`` for the abandoned request), requests from the server
(``ping`` is answered, anything else refused), and the MCP handshake (``initialize``, then
``notifications/initialized``, then a paginated ``tools/list``). A transport only sends one
message and hands every message that comes back to :meth:`Session.receive`, from whatever thread
it reads on; it imports nothing of the session but :class:`Transport` and the errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading

from . import procs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

log = logging.getLogger("sandbox_agent.mcp")

PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "sandbox-agent", "version": "0.1.0"}


class MCPError(Exception):
    """A server failed, answered an error, or did not answer in time."""


class MCPTimeout(MCPError):
    pass


class Transport:
    """How one server is reached. Subclasses raise :class:`MCPError` when a message cannot go out."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: The protocol version the server chose in ``initialize`` (streamable HTTP sends it back).
        self.protocol: str | None = None

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the server is, for the log."""
        raise NotImplementedError

    def open(self, receive: Callable[[bytes | str], None], closed: Callable[[], None]) -> None:
        """Connect (or start the server). ``receive`` takes each raw JSON message the server sends;
        ``closed`` is called when nothing more will come (stdout or the event stream ended)."""
        raise NotImplementedError

    def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Session:
    """The client side of one MCP server: requests, their answers, the server's tools."""

    def __init__(self, transport: Transport, timeout: float) -> None:
        self.name = transport.name
        self.transport = transport
        self.timeout = timeout
        self._pending: dict[int, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self.tools: list[dict[str, Any]] = []

    @property
    def alive(self) -> bool:
        return self.transport.alive

    def start(self) -> None:
        self.transport.protocol = None
        self.transport.open(self.receive, self._wake_all)
        result = self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO})
        self.transport.protocol = str(result.get("protocolVersion") or "") or None
        log.info("MCP server %r started (%s, protocol %s)", self.name, self.transport.describe(),
                 result.get("protocolVersion"))
        self.transport.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.refresh_tools()

    def refresh_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        params: dict[str, Any] = {}
        while True:
            page = self.request("tools/list", params)
            tools.extend(t for t in page.get("tools") or [] if isinstance(t, dict) and t.get("name"))
            cursor = page.get("nextCursor")
            if not cursor:
                break
            params = {"cursor": cursor}
        self.tools = tools
        return tools

    def call_tool(self, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": tool, "arguments": dict(arguments)})

    def request(self, method: str, params: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        timeout = self.timeout if timeout is None else timeout
        with self._pending_lock:
            self._next_id += 1
            request_id = self._next_id
            slot: dict[str, Any] = {"event": threading.Event()}
            self._pending[request_id] = slot
        try:
            # Streamable HTTP delivers the answer inside send(); the others from their reader thread.
            self.transport.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            if not slot["event"].wait(timeout):
                self._notify_cancel(request_id)
                raise MCPTimeout(f"MCP server {self.name!r} did not answer {method} within "
                                 f"{procs.seconds(timeout)} seconds")
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
        message = slot.get("message")
        if message is None:
            raise MCPError(f"MCP server {self.name!r} exited")
        if "error" in message:
            error = message["error"] or {}
            raise MCPError(f"MCP server {self.name!r}: {error.get('message', error)}")
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def _notify_cancel(self, request_id: int) -> None:
        with contextlib.suppress(MCPError):
            self.transport.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": request_id, "reason": "timeout"}})

    def receive(self, raw: bytes | str) -> None:
        """One JSON-RPC message, or a batch of them, as the server sent it."""
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("MCP server %r wrote a non-JSON line: %.200r", self.name, raw)
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                self._on_message(item)

    def _wake_all(self) -> None:
        with self._pending_lock:  # wake every waiter: no answer will come
            for slot in self._pending.values():
                slot["event"].set()

    def _on_message(self, message: dict[str, Any]) -> None:
        if "method" in message:
            if "id" in message:  # a request from the server; we offer no client capabilities but ping
                if message["method"] == "ping":
                    reply = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
                else:
                    reply = {"jsonrpc": "2.0", "id": message["id"],
                             "error": {"code": -32601, "message": "Method not found"}}
                with contextlib.suppress(MCPError):
                    self.transport.send(reply)
            elif message["method"] == "notifications/tools/list_changed":
                self.tools = []  # re-listed on next use
            return
        with self._pending_lock:
            slot = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if slot is None:
            log.debug("MCP server %r answered request %r, which no one awaits (timed out)",
                      self.name, message.get("id"))
            return
        slot["message"] = message
        slot["event"].set()

    def close(self) -> None:
        self.transport.close()
