"""The OpenAPI 3 document (``/openapi.json``) and its Swagger UI page (``/docs``).

One source of truth: the document is generated, when first asked for, from the app's URL map and
the marshmallow schemas that validate the routes (apispec's marshmallow plugin), so every route of
every blueprint is in it, including those registered after this module was written (the E2B ones).

How a route describes itself: decorate its view with :func:`doc` (or set ``view.__apidoc__``)::

    @bp.route("/things/<thing_id>", methods=["POST"])
    @openapi.doc(summary="Change a thing", body=ThingBody, query=ThingQuery,
                 responses={200: ThingReply, 404: "no such thing"}, tags=["things"])
    def change(thing_id): ...

``body`` and ``query`` are marshmallow schemas (classes or instances); ``parameters`` adds OpenAPI
parameter objects (headers, say); a response is a schema (its JSON body), a string (a description
only), or an OpenAPI response object. A view without
``__apidoc__`` is still listed, with its rule's path parameters and methods, its docstring's first
line as summary and the generic answers (JSON ``{"detail"}`` on errors). Views for several methods
may give ``methods={"get": {...}, "post": {...}}`` for per-method overrides.

Swagger UI's files come from the ``swagger-ui-bundle`` package and are served here: no CDN.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify, render_template, send_from_directory
from marshmallow import Schema, fields

bp = Blueprint("openapi", __name__, template_folder="templates")

TITLE = "sandbox-fleet"
VERSION = "0.1.0"
_HIDDEN_METHODS = {"HEAD", "OPTIONS"}
_CONVERTER = re.compile(r"<(?:(?P<conv>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")
_PARAM_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}}


class ErrorReply(Schema):
    detail = fields.String(required=True, metadata={"description": "what is wrong, in one line"})


class DataReply(Schema):
    data = fields.Raw(allow_none=True, metadata={"description": "the method's result"})
    detail = fields.String(metadata={"description": "why a create gave null (only then)"})


def doc(**description: Any) -> Callable:
    """Describe a view for the OpenAPI document (see the module docstring)."""

    def decorate(view: Callable) -> Callable:
        view.__apidoc__ = {**getattr(view, "__apidoc__", {}), **description}
        return view

    return decorate


def openapi_path(rule: str) -> tuple[str, list[dict]]:
    """A werkzeug rule as an OpenAPI path and its path parameters."""
    params = []

    def convert(match: re.Match) -> str:
        schema = _PARAM_TYPES.get(match["conv"] or "", {"type": "string"})
        params.append({"name": match["name"], "in": "path", "required": True, "schema": schema})
        return "{" + match["name"] + "}"

    return _CONVERTER.sub(convert, rule), params


def build_spec(app: Flask) -> dict:
    """The OpenAPI document of every route of the app."""
    spec = APISpec(title=TITLE, version=VERSION, openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Self-hosted sandbox fleet for AI agents, wire-compatible "
                                        "with the agentscope-runtime sandbox server."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("ErrorReply", schema=ErrorReply)
    spec.components.schema("DataReply", schema=DataReply)
    public = public_paths(app)
    paths: dict[str, dict] = {}
    used: set[str] = set()
    for mounted, source in _apps(app):
        for rule in source.url_map.iter_rules():
            view = source.view_functions.get(rule.endpoint)
            if view is None:
                continue
            path, params = openapi_path(rule.rule)
            described = getattr(view, "__apidoc__", {})
            for method in sorted((rule.methods or set()) - _HIDDEN_METHODS):
                if method.lower() in paths.get(path, {}):
                    continue  # a mounted app's route the main app answers first
                operation = _operation(rule.endpoint, view, described, method.lower(), params,
                                       is_public=not mounted and rule.rule.startswith(public),
                                       mounted=mounted)
                if operation["operationId"] in used:  # one view under several rules
                    operation["operationId"] += re.sub(r"[^a-zA-Z0-9]+", "_", path)
                used.add(operation["operationId"])
                paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["security"] = [{"bearer": []}]
    return document


def _apps(app: Flask) -> list[tuple[str, Flask]]:
    """The app, then the apps mounted in front of it (a Flask in ``app.extensions``, as
    sandbox_api/e2b's): their routes share the port, so they are in the document too."""
    mounted = [(key, ext) for key, ext in app.extensions.items() if isinstance(ext, Flask)]
    return [("", app), *sorted(mounted, key=lambda pair: pair[0])]


def public_paths(app: Flask) -> tuple[str, ...]:
    from .auth import PUBLIC_PREFIXES

    return (*PUBLIC_PREFIXES, *app.config.get("SANDBOX_PUBLIC_PATHS", ()))


def _operation(endpoint: str, view: Callable, described: dict, method: str, params: list[dict],
               is_public: bool, mounted: str = "") -> dict:
    described = {**described, **(described.get("methods") or {}).get(method, {})}
    summary = described.get("summary") or (view.__doc__ or "").strip().split("\n")[0] or endpoint
    default_tag = endpoint.split(".")[0] if "." in endpoint else "fleet"
    operation: dict[str, Any] = {
        "operationId": ".".join(p for p in (mounted, endpoint, method) if p),
        "summary": summary,
        "tags": described.get("tags") or [mounted or default_tag],
        "parameters": [*params, *_query_parameters(described.get("query")),
                       *described.get("parameters", ())],
        # A mounted app answers errors in its own shape (E2B's {"code", "message"}).
        "responses": _responses(described.get("responses"), is_public,
                                error_schema=None if mounted else "ErrorReply"),
    }
    if mounted:
        operation["x-mounted-app"] = mounted
    if described.get("description"):
        operation["description"] = described["description"]
    if described.get("body") is not None:
        body = described["body"]
        operation["requestBody"] = {
            "required": described.get("body_required", _has_required(body)),
            "content": {described.get("content_type", "application/json"): {"schema": body}}}
    if is_public:
        operation["security"] = []
    return operation


def _has_required(schema: Any) -> bool:
    if isinstance(schema, type) and issubclass(schema, Schema):
        schema = schema()
    return isinstance(schema, Schema) and any(f.required for f in schema.fields.values())


def _query_parameters(query: Any) -> list[dict]:
    if query is None:
        return []
    schema = query() if isinstance(query, type) else query
    return [{"name": f.data_key or name, "in": "query", "required": f.required,
             "schema": {"type": "string"}, "description": f.metadata.get("description", "")}
            for name, f in schema.fields.items()]


def _responses(given: dict | None, is_public: bool, error_schema: str | None) -> dict:
    error: dict[str, Any] = {"description": "error"}
    if error_schema:
        error["content"] = {"application/json": {"schema": error_schema}}
    out: dict[str, Any] = {}
    for status, value in (given or {200: "OK"}).items():
        if isinstance(value, str):
            out[str(status)] = {"description": value}
        elif isinstance(value, dict):
            out[str(status)] = value
        else:
            out[str(status)] = {"description": "OK" if int(status) < 300 else "error",
                                "content": {"application/json": {"schema": value}}}
    if not is_public:
        out.setdefault("401", {**error, "description": "missing or wrong bearer token"})
        out.setdefault("429", {**error, "description": "too many wrong tokens from this address"})
    out.setdefault("default", error)
    return out


# -- routes ---------------------------------------------------------------------------------

@bp.route("/openapi.json")
@doc(summary="This OpenAPI document", tags=["docs"])
def openapi_json():
    app = current_app._get_current_object()
    document = app.extensions.get("openapi")
    if document is None:  # every blueprint is registered by the first request
        document = app.extensions["openapi"] = build_spec(app)
    return jsonify(document)


@bp.route("/docs")
@doc(summary="API documentation (Swagger UI)", tags=["docs"],
     responses={200: {"description": "HTML page", "content": {"text/html": {}}}})
def docs_page():
    return render_template("docs.html", title=TITLE)


@bp.route("/docs/assets/<path:filename>")
@doc(summary="Swagger UI's files (from the swagger-ui-bundle package)", tags=["docs"],
     responses={200: "the file", 404: "no such file"})
def docs_asset(filename: str):
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(swagger_ui_path, filename, max_age=86400)
