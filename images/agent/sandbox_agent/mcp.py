"""MCP servers inside the sandbox: a small client and the ``/mcp/*`` tools.

JSON-RPC 2.0: ``initialize``, ``notifications/initialized``, ``tools/list`` (paginated) and
``tools/call``, over newline-delimited JSON on a stdio server's stdin/stdout, or over HTTP for
streamable-HTTP and SSE servers (``mcp_http.py``). Every request has a timeout (the server config's
``timeout``, else ``MCP_TIMEOUT``). Servers listed in the config files are started on the first MCP
call, not at agent start-up, so an idle sandbox holds no MCP process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import threading

from . import procs
from .errors import HTTPError, bad_request
from .results import call_tool_result, text_item

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

log = logging.getLogger("sandbox_agent.mcp")

PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "sandbox-agent", "version": "0.1.0"}
HTTP_TYPES = ("streamable_http", "streamableHttp", "sse")


class MCPError(Exception):
    """A server failed, answered an error, or did not answer in time."""


class MCPTimeout(MCPError):
    pass


class StdioServer:
    """One MCP server process spoken to over its stdin/stdout."""

    def __init__(self, name: str, config: Mapping[str, Any], cwd: str, env: Mapping[str, str],
                 timeout: float) -> None:
        self.name = name
        self.config = dict(config)
        self.timeout = float(config.get("timeout") or timeout)
        self._cwd = cwd
        self._env = {**env, **{str(k): str(v) for k, v in (config.get("env") or {}).items()}}
        self._proc: subprocess.Popen | None = None
        self._write_lock = threading.Lock()
        self._pending: dict[int, dict[str, Any]] = {}
        self._pending_lock = threading.Lock()
        self._next_id = 0
        self.tools: list[dict[str, Any]] = []

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._open()
        result = self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO})
        log.info("MCP server %r started (%s, protocol %s)", self.name, self._describe(),
                 result.get("protocolVersion"))
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.refresh_tools()

    def _describe(self) -> str:
        return f"pid {self._proc.pid}" if self._proc else "not running"

    def _open(self) -> None:
        command = str(self.config["command"])
        argv = [shutil.which(command, path=self._env.get("PATH")) or command]
        argv += [str(a) for a in self.config.get("args") or []]
        try:
            self._proc = procs.spawn(argv, self._cwd, self._env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        except OSError as exc:
            raise MCPError(f"cannot start {command!r}: {exc.strerror or exc}") from None
        threading.Thread(target=self._read_loop, args=(self._proc,), name=f"mcp-{self.name}",
                         daemon=True).start()

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
            self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
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
            self._write({"jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": {"requestId": request_id, "reason": "timeout"}})

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False).encode() + b"\n"
        with self._write_lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise MCPError(f"MCP server {self.name!r} is not running")
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                raise MCPError(f"MCP server {self.name!r} exited") from None

    def _read_loop(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            self._on_line(line)
        log.info("MCP server %r closed its stdout", self.name)
        self._wake_all()

    def _on_line(self, line: bytes | str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("MCP server %r wrote a non-JSON line: %.200r", self.name, line)
            return
        for item in message if isinstance(message, list) else [message]:  # a batch, or one
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
                    self._write(reply)
            elif message["method"] == "notifications/tools/list_changed":
                self.tools = []  # re-listed on next use
            return
        with self._pending_lock:
            slot = self._pending.get(message.get("id"))  # type: ignore[arg-type]
        if slot is not None:
            slot["message"] = message
            slot["event"].set()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if procs.wait(proc, 1.0) is None:
            procs.kill_group(proc)
            procs.wait(proc, 5.0)


def _dump_result(result: dict[str, Any]) -> dict[str, Any]:
    """A tools/call result shaped like upstream's ``CallToolResult.model_dump()``."""
    content = []
    for item in result.get("content") or []:
        if isinstance(item, dict):
            item = dict(item)
            item.setdefault("annotations", None)
            if "_meta" in item:
                item["meta"] = item.pop("_meta")
            content.append(item)
    dumped = {"meta": result.get("_meta"), "content": content, "isError": bool(result.get("isError", False))}
    for key, value in result.items():  # structuredContent and other extras pass through
        if key not in ("_meta", "content", "isError"):
            dumped[key] = value
    return dumped


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True  # nothing said: let the server judge
    kind = schema.get("type")
    if kind is None and not any(k in schema for k in ("anyOf", "oneOf")):
        return True
    if kind == "null" or (isinstance(kind, list) and "null" in kind) or schema.get("nullable"):
        return True
    return any(_allows_null(s) for k in ("anyOf", "oneOf") for s in schema.get(k) or [])


def _drop_unset(tool: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Leave out the optional arguments the SDK's wrappers send for "not given".

    Those wrappers send every keyword: unset numbers as null (``browser_wait_for(text=...)``
    sends ``"time": null``) and unset strings as ``""`` (``browser_take_screenshot()`` sends
    ``"filename": ""``). A zod schema refuses null for an optional field, and the browser server
    takes ``""`` as a file name and fails on its output folder, so the calls would fail although
    the caller left the fields out. Only optional fields are left out, and null only where the
    schema has no null; required arguments are passed on as sent.
    """
    schema = tool.get("inputSchema") or {}
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    kept = {}
    for key, value in arguments.items():
        if key not in required and key in properties and (
                (value is None and not _allows_null(properties[key])) or value == ""):
            continue
        kept[key] = value
    return kept


def _json_schema(tool: Mapping[str, Any]) -> dict[str, Any]:
    schema = tool.get("inputSchema") or {}
    return {"name": tool["name"], "json_schema": {"type": "function", "function": {
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": {"type": "object", "properties": schema.get("properties", {}),
                       "required": schema.get("required", [])},
    }}}


class MCPManager:
    """The servers of one sandbox, by name, in the order they were added."""

    def __init__(self, cwd: str, env: Mapping[str, str], timeout: float, config_paths: Sequence[str]) -> None:
        self._cwd = cwd
        self._env = env
        self._timeout = timeout
        self._config_paths = config_paths
        self._servers: dict[str, StdioServer] = {}
        self._lock = threading.RLock()
        self._loaded = False

    def _load_config_files(self) -> None:
        """Start the servers of the config files, once, on the first MCP call."""
        if self._loaded:
            return
        self._loaded = True
        for path in self._config_paths:
            try:
                with open(path, encoding="utf-8") as f:
                    configs = json.load(f)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                log.error("cannot read MCP server configs %s: %s", path, exc)
                continue
            try:
                self.add_servers(configs, overwrite=False)
            except HTTPError as exc:
                log.error("MCP servers from %s: %s", path, exc.detail)

    def add_servers(self, server_configs: Any, overwrite: bool) -> None:
        with self._lock:
            self._load_config_files()
            servers = _parse_configs(server_configs)
            failed: dict[str, str] = {}
            for name, config in servers.items():
                if name in self._servers:
                    if not overwrite:
                        continue
                    self._servers.pop(name).close()
                server = _server_class(config)(name, config, self._cwd, self._env, self._timeout)
                try:
                    server.start()
                except MCPError as exc:
                    server.close()
                    failed[name] = str(exc)
                    continue
                self._servers[name] = server
            if failed:
                raise HTTPError(502, f"Failed to initialize server: {list(failed)}: "
                                     + "; ".join(failed.values()))

    def list_tools(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._load_config_files()
            listing: dict[str, dict[str, Any]] = {}
            for name in list(self._servers):
                tools: dict[str, Any] = {}
                for tool in self._fresh_tools(name):
                    if tool["name"] in tools:
                        log.warning("MCP server %r lists tool %r twice; keeping the first",
                                    name, tool["name"])
                        continue
                    tools[tool["name"]] = _json_schema(tool)
                listing[name] = tools
            return listing

    def call_tool(self, tool_name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._load_config_files()
            server = self._find(tool_name)
        if server is None:
            raise HTTPError(404, f"Tool '{tool_name}' not found.")
        tool = next((t for t in server.tools if t["name"] == tool_name), {})
        try:
            return _dump_result(server.call_tool(tool_name, _drop_unset(tool, arguments)))
        except MCPTimeout as exc:
            return call_tool_result([text_item(str(exc))], True)
        except MCPError as exc:
            raise HTTPError(502, str(exc)) from None

    def _find(self, tool_name: str) -> StdioServer | None:
        for refresh in (False, True):
            for name in list(self._servers):
                tools = self._fresh_tools(name) if refresh or not self._servers[name].tools else \
                    self._servers[name].tools
                if any(t["name"] == tool_name for t in tools):
                    return self._servers[name]
        return None

    def _fresh_tools(self, name: str) -> list[dict[str, Any]]:
        """List a server's tools, restarting it once if its process has died."""
        server = self._servers[name]
        try:
            if not server.alive:
                log.warning("MCP server %r is not running; restarting it", name)
                server.close()
                server.start()
                return server.tools
            return server.refresh_tools()
        except MCPError as exc:
            raise HTTPError(502, str(exc)) from None

    def close(self) -> None:
        with self._lock:
            for server in reversed(list(self._servers.values())):
                server.close()
            self._servers.clear()


def _parse_configs(server_configs: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(server_configs, dict) or not server_configs:
        raise bad_request("server_configs is required.")
    servers = server_configs.get("mcpServers")
    if not isinstance(servers, dict):
        raise bad_request("server_configs must be {\"mcpServers\": {name: config}}")
    for name, config in servers.items():
        if not isinstance(config, dict):
            raise bad_request(f"MCP server {name!r}: config must be an object")
        if config.get("command"):
            continue
        if config.get("url"):
            from urllib.parse import urlsplit

            try:
                url = urlsplit(str(config["url"]))
                url.port  # noqa: B018 (raises ValueError for a bad port)
            except ValueError as exc:
                raise bad_request(f"MCP server {name!r}: bad url: {exc}") from None
            if url.scheme not in ("http", "https") or not url.hostname:
                raise bad_request(f"MCP server {name!r}: url must be http:// or https://")
            continue
        raise bad_request(f"MCP server {name!r}: config needs a command (stdio) or a url")
    return servers


def _server_class(config: Mapping[str, Any]) -> type[StdioServer]:
    """Upstream's rule: a command is stdio; type streamable_http/streamableHttp is streamable
    HTTP; any other url is SSE."""
    if config.get("command"):
        return StdioServer
    from .mcp_http import SseServer, StreamableHttpServer

    return StreamableHttpServer if config.get("type") in HTTP_TYPES[:2] else SseServer
