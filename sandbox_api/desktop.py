"""``/desktop/<id>/<path>``: a GUI sandbox's noVNC pages, for a browser, through the fleet.

The SDK's ``GuiSandbox.desktop_url`` is ``/desktop/<id>/vnc/vnc_relay.html?password=<token>``, where
the token is the record's ``desktop_token`` (what ``/get_info`` shows as ``runtime_token``), never
the sandbox's own secret. The route is outside BEARER_TOKEN (as upstream: a browser cannot send that
header) and is authorised by that token instead: from ``?password=``, or from the cookie the first
authorised answer sets for ``/desktop/<id>`` so the page's own scripts and images load too. Only
``GET`` of files under ``vnc/`` is carried, by the owning host's worker, like ``/proxy``.

The VNC stream itself (``WS /desktop/<id>``) is not served here yet: see docs/types/gui.md.
"""

from __future__ import annotations

import base64
import hmac

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox_core.errors import NotFound, SandboxError

bp = Blueprint("desktop", __name__)

COOKIE = "sandbox_desktop_token"
_KEEP_BACK = {"content-type", "etag", "last-modified"}


def _authorised(record: dict) -> str | None:
    """The token the request proves it holds, or None."""
    expected = record.get("desktop_token") or ""
    for given in (request.args.get("password"), request.cookies.get(COOKIE)):
        if expected and given and hmac.compare_digest(given.encode(), expected.encode()):
            return given
    return None


@bp.route("/desktop/<identity>/<path:path>", methods=["GET"])
def desktop(identity: str, path: str) -> Response:
    fleet = current_app.extensions["sandbox_fleet"]
    record = fleet.live_record(identity)
    token = _authorised(record)
    if token is None:
        return jsonify(detail="desktop access needs the sandbox's desktop token (?password=)"), 403
    if not path.startswith("vnc/"):
        raise NotFound(f"no desktop file {path!r}")
    try:
        reply = fleet.agent_call(record["container_name"], "proxy", touch=False, method="GET",
                                 path=path, query="", headers={}, body=None)
    except SandboxError as e:
        if e.status >= 500:
            e.status, e.detail = 502, f"Upstream request failed: {e.detail}"
        raise
    headers = {k: v for k, v in reply["headers"].items() if k.lower() in _KEEP_BACK}
    headers["Cache-Control"] = "private, no-store"
    response = Response(base64.b64decode(reply["body"]), status=reply["status"], headers=headers)
    if request.args.get("password"):
        response.set_cookie(COOKIE, token, path=f"/desktop/{identity}", httponly=True,
                            samesite="Strict", secure=request.is_secure)
    return response
