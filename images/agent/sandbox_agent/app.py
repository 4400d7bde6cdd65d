"""Routes of the agent: auth, the ``/fastapi`` prefix, and one handler per upstream route.

The services behind the routes (kernel, MCP servers, workspace, git) are made on first use, and
their modules imported then, so an agent that only answers health checks stays small.
"""

from __future__ import annotations

import logging
import threading
from _operator import _compare_digest as compare_digest  # what hmac.compare_digest is, minus OpenSSL

from .config import Settings, sha256
from .envd import routes as envd_routes
from .errors import HTTPError, bad_request
from .httpd import Request, Response, json_response, text_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Handler = Callable[[Request], Response]

log = logging.getLogger("sandbox_agent.app")

PREFIX = "/fastapi"

class App:
    """Callable that turns a :class:`Request` into a :class:`Response`."""

    def __init__(self, settings: Settings) -> None:
        forbid_memory_reads()
        self.settings = settings
        self._token_digest = settings.token_digest
        self._services: dict[str, Any] = {}
        self._services_lock = threading.Lock()
        self.routes: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self.healthz},
            "/tools/run_shell_command": {"POST": self.run_shell_command},
            "/tools/run_ipython_cell": {"POST": self.run_ipython_cell},
            "/mcp/list_tools": {"GET": self.mcp_list_tools},
            "/mcp/call_tool": {"POST": self.mcp_call_tool},
            "/mcp/add_servers": {"POST": self.mcp_add_servers},
            "/watcher/commit_changes": {"POST": self.commit_changes},
            "/watcher/generate_diff": {"POST": self.generate_diff},
            "/watcher/git_logs": {"GET": self.git_logs},
            "/workspace/file": {"GET": self.read_file, "PUT": self.write_file},
            "/workspace/files:batch": {"POST": self.write_files},
            "/workspace/list": {"GET": self.list_dir},
            "/workspace/exists": {"GET": self.exists},
            "/workspace/entry": {"DELETE": self.remove},
            "/workspace/move": {"POST": self.move},
            "/workspace/mkdir": {"POST": self.mkdir},
            "/workspace/archive": {"GET": self.archive_workspace, "PUT": self.restore_workspace},
            "/websockify": {"GET": self.desktop_websocket},
        }
        self.routes.update(envd_routes(self))  # E2B's envd and code interpreter (envd.py)

    def __call__(self, request: Request) -> Response:
        self.authorize(request.headers.get("Authorization"))
        path = request.path
        if path == PREFIX or path.startswith(PREFIX + "/"):
            path = path[len(PREFIX):] or "/"
        methods = self.routes.get(path)
        if methods is None and path.startswith("/vnc/") and request.method in ("GET", "HEAD"):
            methods = {request.method: self.desktop_file}
        if methods is None:
            raise HTTPError(404, "Not Found")
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            raise HTTPError(405, "Method Not Allowed")
        try:
            return handler(request)
        except OSError as exc:
            raise HTTPError.from_oserror(exc) from None

    def authorize(self, header: str | None) -> None:
        """Upstream's ``verify_secret_token``, comparing sha256 digests in constant time (the
        agent knows only the digest when the fleet gives it ``SECRET_TOKEN_SHA256``).

        ``hmac.compare_digest`` is this same function; importing ``hmac`` would load OpenSSL's
        libcrypto through ``hashlib`` (3.8 MiB of RSS) for nothing else.
        """
        if header is None or not header.startswith("Bearer "):
            raise HTTPError(403, "Missing or invalid authorization header")
        token = header.split("Bearer ")[1].encode("utf-8", "surrogateescape")
        if not compare_digest(sha256(token), self._token_digest):
            raise HTTPError(403, "Invalid secret token")

    def service(self, name: str, factory: Callable[[], Any]) -> Any:
        with self._services_lock:
            if name not in self._services:
                self._services[name] = factory()
            return self._services[name]

    def close(self) -> None:
        for service in self._services.values():
            close = getattr(service, "close", None)
            if close is not None:
                close()

    def _timeout(self, body: dict[str, Any]) -> float:
        value = body.get("timeout")
        if value is None:
            return self.settings.tool_timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad_request("timeout must be a positive number of seconds")
        return float(value)

    # ---- health and tools ------------------------------------------------------------------------
    def healthz(self, request: Request) -> Response:
        return text_response("OK")

    def run_shell_command(self, request: Request) -> Response:
        from .shell import run_shell_command

        body = request.json()
        command = _required_str(body, "command", "Command is required.")
        timeout = self._timeout(body)
        s = self.settings
        return json_response(run_shell_command(command, timeout, s.workspace, s.child_env))

    def run_ipython_cell(self, request: Request) -> Response:
        body = request.json()
        code = _required_str(body, "code", "Code is required.")
        timeout = self._timeout(body)
        try:
            return json_response(self._kernel().run_cell(code, timeout))
        except RuntimeError as exc:  # the kernel could not start
            raise HTTPError(503, str(exc)) from None

    def _kernel(self) -> Any:
        from .kernel import Kernel

        s = self.settings
        return self.service("kernel", lambda: Kernel(s.workspace, s.child_env, s.kernel_start_timeout))

    # ---- MCP -------------------------------------------------------------------------------------
    def _mcp(self) -> Any:
        from .mcp import MCPManager

        s = self.settings
        return self.service("mcp", lambda: MCPManager(s.workspace, s.child_env, s.mcp_timeout,
                                                      s.mcp_config_paths))

    def mcp_list_tools(self, request: Request) -> Response:
        return json_response(self._mcp().list_tools())

    def mcp_call_tool(self, request: Request) -> Response:
        body = request.json()
        tool_name = _required_str(body, "tool_name", "tool_name is required.")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise bad_request("arguments must be an object")
        return json_response(self._mcp().call_tool(tool_name, arguments))

    def mcp_add_servers(self, request: Request) -> Response:
        body = request.json()
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise bad_request("overwrite must be true or false")
        self._mcp().add_servers(body.get("server_configs"), overwrite)
        return text_response("OK")

    # ---- watcher ---------------------------------------------------------------------------------
    def _git(self) -> Any:
        from .watcher import Git

        return self.service("git", lambda: Git(self.settings.workspace, self.settings.child_env))

    def commit_changes(self, request: Request) -> Response:
        body = request.json() if request.body().strip() else {}
        message = body.get("commit_message") or "Automated commit"
        if not isinstance(message, str):
            raise bad_request("commit_message must be a string")
        return json_response(self._git().commit_changes(message))

    def generate_diff(self, request: Request) -> Response:
        body = request.json()
        revs = []
        for key in ("commit_a", "commit_b"):
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise bad_request(f"{key} must be a string or null")
            revs.append(value)
        return json_response(self._git().generate_diff(*revs))

    def git_logs(self, request: Request) -> Response:
        return json_response(self._git().git_logs())

    # ---- workspace -------------------------------------------------------------------------------
    def _ws(self) -> Any:
        from .workspace import Workspace

        return self.service("workspace", lambda: Workspace(self.settings.workspace))

    def archive_workspace(self, request: Request) -> Response:
        from .archive import archive

        return archive(self.settings.workspace, request)

    def restore_workspace(self, request: Request) -> Response:
        from .archive import restore

        return restore(self.settings.workspace, request)

    def read_file(self, request: Request) -> Response:
        fmt = request.arg("format", "text")
        if fmt not in ("text", "bytes"):
            raise bad_request("format must be 'text' or 'bytes'")
        f, size = self._ws().open_file(request.arg("path"))
        content_type = "text/plain; charset=utf-8" if fmt == "text" else "application/octet-stream"
        return Response(200, content_type=content_type, stream=f, length=size)

    def write_file(self, request: Request) -> Response:
        return json_response(self._ws().write_file(request.arg("path"), request.iter_body()))

    def write_files(self, request: Request) -> Response:
        from . import multipart

        ws = self._ws()
        with ws.spooling() as spool:
            def sink(name: str, filename: str | None, _kind: str | None) -> Any:
                if name == "files":  # streamed into the workspace, never held in memory
                    return spool()
                return None if filename is None else multipart.DISCARD  # other files: read past

            parts = multipart.parse(request.iter_body(), request.headers.get("Content-Type", ""), sink)
            files = [p for p in parts if p.name == "files"]
            try:
                paths = [p.data.decode("utf-8") for p in parts if p.name == "paths" and p.filename is None]
            except UnicodeDecodeError:
                raise bad_request("paths must be UTF-8 text") from None
            if paths and len(paths) != len(files):
                raise bad_request("`paths` length must match `files` length")
            items = []
            for i, part in enumerate(files):
                target = paths[i] if paths else part.filename
                if not target:
                    raise bad_request("missing target path for a part")
                items.append((target, part.data))
            return json_response(ws.write_many(items))

    def list_dir(self, request: Request) -> Response:
        raw = request.arg("depth") or "1"
        try:
            depth = int(raw)
        except ValueError:
            raise bad_request("depth must be an integer >= 1") from None
        if depth < 1:
            raise bad_request("depth must be an integer >= 1")
        return json_response(self._ws().list_dir(request.arg("path"), depth))

    def exists(self, request: Request) -> Response:
        return json_response({"exists": self._ws().exists(request.arg("path"))})

    def remove(self, request: Request) -> Response:
        self._ws().remove(request.arg("path"))
        return Response(204)

    def move(self, request: Request) -> Response:
        body = request.json()
        return json_response(self._ws().move(body.get("source"), body.get("destination")))

    def mkdir(self, request: Request) -> Response:
        return json_response({"created": self._ws().mkdir(request.json().get("path"))})


    # ---- desktop (gui images) ---------------------------------------------------------------------
    def desktop_file(self, request: Request) -> Response:
        from .desktop import static_file

        path = request.path
        subpath = path[path.index("/vnc/") + len("/vnc/"):]
        return static_file(self.settings.novnc_dir, subpath)

    def desktop_websocket(self, request: Request) -> Response:
        from .desktop import websocket_bridge

        return websocket_bridge(request, self.settings.vnc_port)


def forbid_memory_reads() -> None:
    """Make this process non-dumpable (``PR_SET_DUMPABLE`` 0). Tools run as root in the sandbox,
    the agent's uid: without this they could read ``/proc/<agent>/mem`` (and ``environ``) and find
    the bearer token of a recent request there. Non-dumpable, that takes CAP_SYS_PTRACE, which
    sandboxes do not have. The processes the agent starts are dumpable again after their exec."""
    try:
        import ctypes  # about 1 MiB of RSS, the only way to prctl from the standard library

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (ImportError, OSError, AttributeError) as exc:
        log.warning("the agent's memory stays readable to the sandbox's own processes: %s", exc)


def _required_str(body: dict[str, Any], key: str, message: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        raise bad_request(message)
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value
