"""MCP servers inside the sandbox: the ``/mcp/*`` tools, over a small client.

The client is one JSON-RPC session (``mcp_session.py``: ``initialize``, ``tools/list`` paginated,
``tools/call``, timeouts) over one of three transports: stdio (``mcp_stdio.py``), streamable HTTP
and SSE (``mcp_http.py``). Modules import downwards only: this one -> transports -> session. Every
request has a timeout (the server config's ``timeout``, else ``MCP_TIMEOUT``). Servers listed in
the config files are started on the first MCP call, not at agent start-up, so an idle sandbox
holds no MCP process; the transport modules are imported when a server of their kind is added.
"""

from __future__ import annotations

import json
import logging
import threading

from .errors import HTTPError, bad_request
from .mcp_session import MCPError, MCPTimeout, Session
from .results import call_tool_result, text_item

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

log = logging.getLogger("sandbox_agent.mcp")

HTTP_TYPES = ("streamable_http", "streamableHttp", "sse")


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
        self._servers: dict[str, Session] = {}
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
                server = _session(name, config, self._cwd, self._env, self._timeout)
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
            if server is not None and not server.alive:
                self._fresh_tools(server.name)  # restarts it; a call is never retried, though
        if server is None:
            raise HTTPError(404, f"Tool '{tool_name}' not found.")
        tool = next((t for t in server.tools if t["name"] == tool_name), {})
        try:
            return _dump_result(server.call_tool(tool_name, _drop_unset(tool, arguments)))
        except MCPTimeout as exc:
            return call_tool_result([text_item(str(exc))], True)
        except MCPError as exc:
            raise HTTPError(502, str(exc)) from None

    def _find(self, tool_name: str) -> Session | None:
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
            if server.alive:
                try:
                    return server.refresh_tools()
                except MCPError:
                    if server.alive:  # it answered an error or nothing in time: say so
                        raise
                    # it died while we asked (killed just before): start it again, as below
            log.warning("MCP server %r is not running; restarting it", name)
            server.close()
            server.start()
            return server.tools
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


def _session(name: str, config: Mapping[str, Any], cwd: str, env: Mapping[str, str],
             default_timeout: float) -> Session:
    """Upstream's rule: a command is stdio; type streamable_http/streamableHttp is streamable
    HTTP; any other url is SSE."""
    timeout = float(config.get("timeout") or default_timeout)
    if config.get("command"):
        from .mcp_stdio import StdioTransport

        return Session(StdioTransport(name, config, cwd, env), timeout)
    from .mcp_http import SseTransport, StreamableHttpTransport

    kind = StreamableHttpTransport if config.get("type") in HTTP_TYPES[:2] else SseTransport
    return Session(kind(name, config, timeout), timeout)
