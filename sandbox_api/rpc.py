"""The agentscope-runtime RPC routes: ``POST /<method>`` and ``POST /<method>_async``.

Each takes a JSON object of the method's arguments and answers ``{"data": <result>}``. Views only
validate and call the Fleet; errors are raised and turned into responses in one place (app.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from marshmallow import Schema

from sandbox_core import states
from sandbox_core.errors import BadRequest, NotFound, SandboxError
from sandbox_core.fleet import Fleet, public_info

from . import schemas
from .openapi import DataReply, ErrorReply

bp = Blueprint("rpc", __name__)


def fleet() -> Fleet:
    return current_app.extensions["sandbox_fleet"]


# -- handlers: (fleet, **body) -> data -------------------------------------------------------

def _creating(create: Callable[..., str]) -> Callable[..., str | None]:
    """A create that cannot be served answers ``{"data": null}``: the SDK treats anything else
    (an error status included) as a sandbox id. The reason still goes to the log and ``detail``."""

    def handler(f: Fleet, **body: Any):
        try:
            return create(f, **body)
        except BadRequest:
            raise
        except SandboxError as e:
            current_app.logger.warning("create refused: %s", e.detail)
            return _NullWithDetail(e.detail)

    return handler


class _NullWithDetail:
    def __init__(self, detail: str) -> None:
        self.detail = detail


def _get_info(f: Fleet, identity: str, _redirect_depth: int = 0) -> dict:
    # _redirect_depth is upstream's wire field, accepted and ignored: the store follows redirects.
    record = f.store.find(identity)
    if record is None:
        raise NotFound(f"sandbox not found: {identity}")
    return public_info(record)


def _check_health(f: Fleet, identity: str) -> bool:
    try:
        return bool(f.agent_call(identity, "check_health", timeout=5))
    except NotFound:
        return False


def _get_status(f: Fleet, identity: str) -> str | None:
    try:
        return f.control(identity, "status")
    except NotFound:
        return None


def _cleanup(f: Fleet) -> None:
    """Upstream's contract: release every sandbox of the fleet (the SDK's SandboxManager calls it
    when used as a context manager)."""
    f.cleanup()


def _get_session_mapping(f: Fleet, session_ctx_id: str) -> list[str]:
    names = f.store.session_names(session_ctx_id)
    return [n for n in names if (f.store.get(n) or {}).get("state") in states.LIVE_STATES]


ROUTES: dict[str, tuple[type[Schema], Callable[..., Any]]] = {
    "create_from_pool": (schemas.CreateFromPoolBody, _creating(
        lambda f, sandbox_type, meta: f.acquire(sandbox_type, meta))),
    "create": (schemas.CreateBody, _creating(
        lambda f, **body: f.create(body.pop("sandbox_type"), **body))),
    "release": (schemas.IdentityBody, lambda f, identity: f.release(identity)),
    "get_info": (schemas.GetInfoBody, _get_info),
    "list_tools": (schemas.ListToolsBody, lambda f, identity, tool_type: f.agent_call(
        identity, "list_tools", tool_type=tool_type)),
    "call_tool": (schemas.CallToolBody, lambda f, identity, tool_name, arguments: f.agent_call(
        identity, "call_tool", tool_name=tool_name, arguments=arguments or {})),
    "check_health": (schemas.IdentityBody, _check_health),
    "add_mcp_servers": (schemas.AddMcpServersBody, lambda f, identity, server_configs, overwrite:
                        f.agent_call(identity, "add_mcp_servers", server_configs=server_configs,
                                     overwrite=overwrite)),
    "get_status": (schemas.IdentityBody, _get_status),
    "start": (schemas.IdentityBody, lambda f, identity: f.control(identity, "start")),
    "stop": (schemas.IdentityBody, lambda f, identity: f.control(identity, "stop")),
    "get_session_mapping": (schemas.SessionBody, _get_session_mapping),
    "list_session_keys": (schemas.EmptyBody, lambda f: f.store.session_keys()),
    "cleanup": (schemas.EmptyBody, _cleanup),
}


#: What each method does, for the OpenAPI document (sandbox_api/openapi.py).
SUMMARIES = {
    "create_from_pool": "A warm sandbox of the type if one is pooled, else a new one; data: its name",
    "create": "Create a sandbox and wait until it answers; data: its name, or null with a detail",
    "release": "Release a sandbox (the teardown runs on its host); unknown ids are fine",
    "get_info": "A sandbox's record (upstream's ContainerModel, without its secret)",
    "list_tools": "The tools a sandbox offers",
    "call_tool": "Call one tool in a sandbox; data: the tool's result",
    "check_health": "Whether a sandbox's agent answers",
    "add_mcp_servers": "Start MCP servers in a sandbox",
    "get_status": "A sandbox's container status, or null",
    "start": "Start a stopped sandbox's container",
    "stop": "Stop a sandbox's container",
    "get_session_mapping": "The live sandboxes of a session",
    "list_session_keys": "Every session with a sandbox",
    "cleanup": "Release every sandbox of the fleet",
}


def _body() -> dict:
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _spread_args(body: dict, schema: Schema) -> dict:
    """Accept the SDK's ``{"args": a, "kwargs": b}`` bodies from its ``*args`` async twins."""
    if "args" not in body or "args" in schema.fields:
        return body
    body = dict(body)
    args = body.pop("args")
    args = list(args) if isinstance(args, list) else [args]
    extra = body.pop("kwargs", None)
    if isinstance(extra, dict):
        body.update(extra)
    elif extra is not None:
        args.append(extra)  # the SDK sends a second positional argument under "kwargs"
    names = schemas.positional_fields(schema)
    if len(args) > len(names):
        raise BadRequest(f"too many positional arguments: expected at most {len(names)}")
    for name, value in zip(names, args, strict=False):
        body.setdefault(name, value)
    return body


def _view(name: str, schema_class: type[Schema], handler: Callable[..., Any]):
    schema = schema_class()

    def view():
        body = schema.load(_spread_args(_body(), schema))
        data = handler(fleet(), **body)
        if isinstance(data, _NullWithDetail):
            return jsonify(data=None, detail=data.detail)
        return jsonify(data=data)

    view.__name__ = name
    base = name.removesuffix("_async")
    view.__apidoc__ = {  # read by sandbox_api/openapi.py
        "summary": SUMMARIES.get(base, base) + (" (the SDK's async twin)" if base != name else ""),
        "tags": ["sandboxes"], "body": schema_class,
        "responses": {200: DataReply, 400: ErrorReply, 404: ErrorReply, 503: ErrorReply}}
    return view


for _name, (_schema, _handler) in ROUTES.items():
    for _suffix in ("", "_async"):
        bp.add_url_rule(f"/{_name}{_suffix}", endpoint=_name + _suffix,
                        view_func=_view(_name + _suffix, _schema, _handler), methods=["POST"])
