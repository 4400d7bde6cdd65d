"""The agent's ``/envd/*`` routes: what the fleet's E2B API (sandbox_api/e2b) asks of a sandbox.

Processes (and ptys), the file system, watchers, metrics and code contexts live in their own
modules, imported on first use, so an agent nobody speaks E2B to stays as small as before.
"""

from __future__ import annotations

from .errors import bad_request
from .httpd import Request, Response, json_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .app import App, Handler


def routes(app: App) -> dict[str, dict[str, Handler]]:
    def processes() -> Any:
        from .envd_process import ProcessTable

        return app.service("envd_processes", lambda: ProcessTable(app.settings.child_env))

    def contexts() -> Any:
        from .envd_code import Contexts

        s = app.settings
        return app.service("envd_contexts", lambda: Contexts(s.child_env, s.kernel_start_timeout))

    def watchers() -> Any:
        from .envd_watch import Watchers

        return app.service("envd_watchers", Watchers)

    def metrics(request: Request) -> Response:
        from .envd_metrics import Metrics

        return json_response(app.service("envd_metrics", Metrics).sample())

    def call(service, method: str):
        return lambda request: json_response(getattr(service(), method)(request.json()))

    def fs(function: str):
        def handler(request: Request) -> Response:
            from . import envd_fs

            return json_response(getattr(envd_fs, function)(request.json()))

        return handler

    def get_file(request: Request) -> Response:
        from .envd_fs import read_range

        data = read_range(request.arg("path"), _int(request, "offset"), _int(request, "length", 1 << 22))
        return Response(200, data, "application/octet-stream")

    def put_file(request: Request) -> Response:
        from .envd_fs import write_range

        return json_response(write_range(request.arg("path"), _int(request, "offset"),
                                         request.iter_body()))

    def list_contexts(request: Request) -> Response:
        return json_response(contexts().list())

    def create_context(request: Request) -> Response:
        return json_response(contexts().create(request.json()))

    def context_op(method: str):
        def handler(request: Request) -> Response:
            context_id = request.json().get("id")
            if not isinstance(context_id, str) or not context_id:
                raise bad_request("id is required")
            getattr(contexts(), method)(context_id)
            return json_response({})

        return handler

    return {
        "/envd/process/start": {"POST": call(processes, "start")},
        "/envd/process/read": {"POST": call(processes, "read")},
        "/envd/process/list": {"POST": lambda request: json_response(processes().list())},
        "/envd/process/signal": {"POST": call(processes, "signal")},
        "/envd/process/input": {"POST": call(processes, "send_input")},
        "/envd/process/close_stdin": {"POST": call(processes, "close_stdin")},
        "/envd/process/update": {"POST": call(processes, "update")},
        "/envd/watch/create": {"POST": call(watchers, "create")},
        "/envd/watch/read": {"POST": call(watchers, "read")},
        "/envd/watch/events": {"POST": call(watchers, "take")},
        "/envd/watch/remove": {"POST": call(watchers, "remove")},
        "/envd/metrics": {"GET": metrics},
        "/envd/fs/stat": {"POST": fs("stat_entry")},
        "/envd/fs/list_dir": {"POST": fs("list_dir")},
        "/envd/fs/make_dir": {"POST": fs("make_dir")},
        "/envd/fs/move": {"POST": fs("move")},
        "/envd/fs/remove": {"POST": fs("remove")},
        "/envd/files": {"GET": get_file, "PUT": put_file},
        "/envd/execute/start": {"POST": call(contexts, "start")},
        "/envd/execute/read": {"POST": call(contexts, "read")},
        "/envd/contexts": {"GET": list_contexts, "POST": create_context},
        "/envd/contexts/delete": {"POST": context_op("delete")},
        "/envd/contexts/restart": {"POST": context_op("restart")},
    }


def _int(request: Request, name: str, default: int = 0) -> int:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if value < 0:
        raise bad_request(f"{name} must be >= 0")
    return value
