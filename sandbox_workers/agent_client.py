"""HTTP to the agent inside a sandbox, over this host's loopback (or at a cloud sandbox's endpoint
URL), on persistent connections.

The agent speaks agentscope-runtime's in-container protocol (``/fastapi`` prefix, Bearer
SECRET_TOKEN), so upstream images and ours are driven the same way.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, BinaryIO

import urllib3

from backends.base import session_headers
from sandbox_core import netpath, polling
from sandbox_core.errors import BackendError, NotFound, Unavailable

ADDRESS_CACHE_SIZE = 4096
MiB = 1024 * 1024
READ_CHUNK = 256 * 1024
DEFAULT_MAX_REPLY = 32 * MiB

def _generic_tool(name: str, description: str, parameter: str, parameter_description: str) -> dict:
    return {"name": name, "json_schema": {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object",
                       "properties": {parameter: {"type": "string", "description": parameter_description}},
                       "required": [parameter]}}}}


#: What upstream's manager adds to every type's list_tools (observed on the wire).
GENERIC_TOOLS = {
    "run_ipython_cell": _generic_tool("run_ipython_cell", "Run an IPython cell.", "code",
                                      "IPython code to execute"),
    "run_shell_command": _generic_tool("run_shell_command", "Run a shell command.", "command",
                                       "Shell command to execute"),
}

#: Tools with their own route in the agent; everything else goes through MCP.
_TOOL_ROUTES = {"run_ipython_cell": ("/tools/run_ipython_cell", "code"),
                "run_shell_command": ("/tools/run_shell_command", "command")}


class AgentResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class ReplyTooLarge(BackendError):
    """The agent answered more than FLEET_MAX_AGENT_REPLY_MB: it was dropped, not truncated."""


class AgentClient:
    """One connection pool per sandbox port, shared by all threads of the worker.

    A sandbox is root inside and may serve anything on its port, so no answer is read past
    ``max_reply`` bytes (FLEET_MAX_AGENT_REPLY_MB): a worker shared by many sandboxes never holds
    more than that per call.
    """

    def __init__(self, max_connections_per_sandbox: int = 8,
                 max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self.http = urllib3.PoolManager(
            num_pools=4096, maxsize=max_connections_per_sandbox, block=False, retries=False)
        self.max_reply = max_reply
        self._addresses: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def address_of(self, name: str, store) -> dict:
        """The fields a call needs (port, secret, ids) of a live sandbox, cached in the worker.

        They hardly change while a sandbox lives (a pod started again may have a new address: a
        call that cannot connect drops the entry, so the next one reads the record again); the API
        checks liveness before every call, so a stale entry otherwise only meets a sandbox being
        torn down, and that call fails as it would anyway.
        """
        with self._lock:
            if name in self._addresses:
                self._addresses.move_to_end(name)
                return self._addresses[name]
        record = store.get(name)
        if record is None or record.get("state") not in ("running", "warm") or not (
                record.get("port") or record.get("agent_url")):
            raise NotFound(f"sandbox not found: {name}")
        address = {k: record[k] for k in ("agent_secret", "container_id", "container_name")}
        address.update(port=record.get("port"), agent_url=record.get("agent_url"),
                       agent_interface=record.get("agent_interface"))
        with self._lock:
            self._addresses[name] = address
            while len(self._addresses) > ADDRESS_CACHE_SIZE:
                self._addresses.popitem(last=False)
        return address

    def forget(self, name: str) -> None:
        with self._lock:
            self._addresses.pop(name, None)

    def request(self, record: dict, method: str, path: str, *, body: bytes | BinaryIO | None = None,
                json_body: Any = None, headers: dict | None = None, timeout: float = 60,
                query: str = "") -> AgentResponse:
        """One call; the answer is read whole, at most ``max_reply`` bytes."""
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        response = self.open(record, method, path, body=body, headers=headers, timeout=timeout,
                             query=query)
        try:
            data = self._read_capped(response, record["container_name"])
        except urllib3.exceptions.HTTPError as e:
            raise Unavailable(f"sandbox {record['container_name']} did not answer: {e}") from e
        finally:
            response.release_conn()
        return AgentResponse(response.status, dict(response.headers), data)

    def open(self, record: dict, method: str, path: str, *, body: bytes | BinaryIO | None = None,
             headers: dict | None = None, timeout: float = 60,
             query: str = "") -> urllib3.BaseHTTPResponse:
        """One call whose answer the caller reads as a stream (a workspace archive), then
        releases with ``release_conn()``. Nothing caps it: the caller bounds what it takes."""
        base = record.get("agent_url")
        url = f"{base}/fastapi{path}" if base else f"http://127.0.0.1:{record['port']}/fastapi{path}"
        if query:
            url = f"{url}?{query}"
        all_headers = {"Authorization": f"Bearer {record['agent_secret']}",
                       **session_headers(record["container_id"])}
        if headers:
            all_headers.update(headers)
        parsed = urllib3.util.parse_url(url)
        try:
            # A pool per address and interface: bound to a bridge, a call leaves through it or
            # fails before sending anything (sandbox_core.netpath).
            pool = self.http.connection_from_host(
                parsed.host, parsed.port, parsed.scheme,
                pool_kwargs={"socket_options": netpath.socket_options(record.get("agent_interface"))})
            return pool.urlopen(
                method, parsed.request_uri, body=body, headers=all_headers, preload_content=False,
                timeout=urllib3.Timeout(connect=5, read=timeout), redirect=False)
        except urllib3.exceptions.HTTPError as e:
            if isinstance(e, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError):
                self.forget(record["container_name"])
            raise Unavailable(f"sandbox {record['container_name']} did not answer: {e}") from e

    def _read_capped(self, response: urllib3.BaseHTTPResponse, name: str) -> bytes:
        """The whole body, read in bounded chunks; ReplyTooLarge (and the connection closed, the
        rest unread) once it passes ``max_reply``."""
        declared = response.headers.get("Content-Length", "")
        parts, size = [], 0
        too_large = declared.isdigit() and int(declared) > self.max_reply
        while not too_large:
            part = response.read(READ_CHUNK)
            if not part:
                return b"".join(parts)
            size += len(part)
            too_large = size > self.max_reply
            parts.append(part)
        parts.clear()
        response.close()  # never drained: the connection goes, not the rest of the reply
        raise ReplyTooLarge(f"sandbox {name} answered more than FLEET_MAX_AGENT_REPLY_MB "
                            f"({self.max_reply // MiB} MiB); the reply was dropped")

    def wait_ready(self, record: dict, deadline: float) -> None:
        """Block until the agent answers /healthz (a bounded readiness probe after start)."""
        last_error = ["no answer"]

        def ready() -> bool:
            try:
                response = self.request(record, "GET", "/healthz", timeout=2)
            except Unavailable as e:
                last_error[0] = str(e)
                return False
            last_error[0] = f"HTTP {response.status}"
            return response.status == 200

        # Steps of at most 20 ms, not polling's 100: a create holds one of the host's few
        # creates-in-flight slots until this returns, and a probe costs a refused connect.
        if not polling.poll(ready, deadline - time.monotonic(), most=0.02):
            raise Unavailable(f"sandbox {record['container_name']} was not ready in time: {last_error[0]}")

    def call_tool(self, record: dict, tool_name: str, arguments: dict, timeout: float) -> dict:
        """Run a tool; agent-side failures come back as an MCP error result, as upstream."""
        if tool_name in _TOOL_ROUTES:
            path, key = _TOOL_ROUTES[tool_name]
            payload = {key: arguments.get(key, ""), "timeout": timeout}
        else:
            path, payload = "/mcp/call_tool", {"tool_name": tool_name, "arguments": arguments}
        # The agent enforces the tool's own timeout; give the HTTP read a little more.
        try:
            response = self.request(record, "POST", path, json_body=payload, timeout=timeout + 5)
        except ReplyTooLarge as e:
            return error_result(f"{e.detail} (tool {tool_name}); print less, or write the "
                                "output to a file in /workspace and read it in parts")
        if response.status != 200:
            return error_result(f"{response.status} {_detail(response)} (tool {tool_name})")
        return response.json()

    def list_tools(self, record: dict, tool_type: str | None, timeout: float) -> dict:
        response = self.request(record, "GET", "/mcp/list_tools", timeout=timeout)
        tools = response.json() if response.status == 200 else {}
        tools = dict(tools or {})
        tools["generic"] = GENERIC_TOOLS
        if tool_type:
            return {tool_type: tools.get(tool_type, {})}
        return tools

    def add_mcp_servers(self, record: dict, server_configs: dict, overwrite: bool,
                        timeout: float) -> Any:
        response = self.request(record, "POST", "/mcp/add_servers", timeout=timeout,
                                json_body={"server_configs": server_configs, "overwrite": overwrite})
        if response.status != 200:
            return {"isError": True, "content": [{"type": "text", "text": _detail(response)}]}
        try:
            return response.json()
        except ValueError:  # upstream's agent (and ours) answer a plain-text "OK"
            return response.body.decode(errors="replace")

    def check_health(self, record: dict) -> bool:
        try:
            return self.request(record, "GET", "/healthz", timeout=5).status == 200
        except Unavailable:
            return False

    def close(self) -> None:
        self.http.clear()


def error_result(text: str) -> dict:
    return {"meta": None, "content": [{"type": "text", "text": text, "annotations": None}],
            "isError": True}


def _detail(response: AgentResponse) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and "detail" in data:
            return str(data["detail"])
    except ValueError:
        pass
    return response.body.decode(errors="replace")[:2000]
