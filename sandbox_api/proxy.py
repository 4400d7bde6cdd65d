"""``/proxy/<identity>/<path>``: the SDK's ``sb.fs`` file calls, carried to the sandbox's agent.

The client's own Authorization header is dropped (upstream forwarded it and broke ``sb.fs`` with
auth on); the worker adds the sandbox's secret on its host.
"""

from __future__ import annotations

import base64

from flask import Blueprint, Response, current_app, request

from sandbox_core.errors import SandboxError

from .openapi import ErrorReply, doc

bp = Blueprint("proxy", __name__)

#: Headers that describe one hop, or carry the fleet's credentials: never forwarded.
_DROP = {"authorization", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
         "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
         "accept-encoding", "cookie"}
_KEEP_BACK = {"content-type", "content-disposition", "etag", "last-modified", "cache-control"}


@bp.route("/proxy/<identity>/<path:path>",
          methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@doc(summary="A request carried to the sandbox's agent (the SDK's sb.fs file calls)",
     tags=["sandboxes"], body_required=False,
     body={"type": "string", "format": "binary"}, content_type="application/octet-stream",
     responses={200: "the agent's answer, as it gave it", 404: ErrorReply, 502: ErrorReply})
def proxy(identity: str, path: str) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    body = request.get_data()
    try:
        reply = current_app.extensions["sandbox_fleet"].agent_call(
            identity, "proxy", method=request.method, path=path,
            query=request.query_string.decode(), headers=headers,
            body=base64.b64encode(body).decode() if body else None)
    except SandboxError as e:
        if e.status == 404:
            e.detail = f"sandbox not found: {identity}"
        elif e.status >= 500:
            e.status, e.detail = 502, f"proxy upstream error: {e.detail}"
        raise
    out_headers = {k: v for k, v in reply["headers"].items() if k.lower() in _KEEP_BACK}
    content_type = out_headers.get("Content-Type") or out_headers.get("content-type")
    if content_type and content_type.startswith("text/") and "charset" not in content_type:
        # requests decodes text without a charset as Latin-1; the agent always writes UTF-8.
        out_headers.pop("content-type", None)
        out_headers["Content-Type"] = f"{content_type}; charset=utf-8"
    return Response(base64.b64decode(reply["body"]), status=reply["status"], headers=out_headers)
