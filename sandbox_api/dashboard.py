"""``GET /dashboard``: a read-only page for operators: hosts, pools, live sandboxes, recent failures.

Server-rendered (Jinja), no script, no CDN; it reloads itself every :data:`REFRESH` seconds. It is
behind BEARER_TOKEN like the API: a browser, which cannot send the header, opens
``/dashboard?token=<BEARER_TOKEN>`` once; auth.py accepts the token there, and this page answers
with a redirect to plain ``/dashboard`` that sets it as an HttpOnly cookie (path /dashboard,
SameSite=Strict), so the token leaves the address bar and the history at once.
"""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, current_app, redirect, render_template, request

from sandbox_core import states

from .auth import TOKEN_COOKIE
from .metrics import snapshot
from .openapi import doc

bp = Blueprint("dashboard", __name__, template_folder="templates")

REFRESH = 10
FAILURES_SHOWN = 20
COOKIE_MAX_AGE = 12 * 3600


@bp.route("/dashboard")
@doc(summary="Operator's dashboard (HTML): hosts, pools, live sandboxes, recent failures",
     tags=["operations"],
     description="A browser opens /dashboard?token=<BEARER_TOKEN> once: the answer is a redirect "
                 "that keeps the token in an HttpOnly cookie.",
     parameters=[{"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                  "description": "BEARER_TOKEN, for a browser (set as a cookie)"}],
     responses={200: {"description": "HTML page", "content": {"text/html": {}}},
                303: "token taken into a cookie; go to /dashboard"})
def dashboard():
    settings = current_app.config["SANDBOX_SETTINGS"]
    given = request.args.get("token", "")
    if settings.BEARER_TOKEN and given and hmac.compare_digest(given.encode(),
                                                              settings.BEARER_TOKEN.encode()):
        # keep it in a cookie and take it out of the address bar (a wrong one: auth said 401,
        # unless a right header came with it, and then it is not kept)
        response = redirect("/dashboard", code=303)
        response.set_cookie(TOKEN_COOKIE, request.args["token"], max_age=COOKIE_MAX_AGE,
                            path="/dashboard", httponly=True, samesite="Strict",
                            secure=request.is_secure)
        return response
    fleet = current_app.extensions["sandbox_fleet"]
    view = snapshot(fleet)
    now = time.time()
    hosts = []
    for host in view["hosts"]:
        mine = [s for s in view["sandboxes"] if s.get("host") == host]
        hosts.append({
            "name": host,
            "workers": sorted(w["role"] for w in view["workers"] if w["host"] == host),
            "draining": host in view["draining"],
            "running": sum(1 for s in mine if s.get("state") == states.RUNNING),
            "warm": sum(1 for s in mine if s.get("state") == states.WARM),
            "creating": sum(1 for s in mine if s.get("state") == states.CREATING),
            "queued": {kind: view["queues"].get(queue, 0) for kind, queue in
                       (("lifecycle", f"host.{host}"), ("calls", f"host.{host}.calls"))},
        })
    sandboxes = sorted(view["sandboxes"], key=lambda s: s.get("created_at") or 0, reverse=True)
    rows = [{
        "name": s["container_name"],
        "type": s.get("sandbox_type") or "",
        "state": s.get("state") or "",
        "host": s.get("host") or "(not placed yet)",
        "age": _ago(now, s.get("created_at")),
        "touched": _ago(now, s.get("last_active_at")),
        "session": s.get("session_ctx_id") or ("(pool)" if s.get("pool_type") and
                                              s.get("state") == states.WARM else ""),
    } for s in sandboxes]
    failures = [{**f, "ago": _ago(now, f.get("at"))}
                for f in fleet.store.recent_failures(FAILURES_SHOWN)]
    return render_template(
        "dashboard.html", hosts=hosts, pools=view["pools"], sandboxes=rows, failures=failures,
        live=view["live"], max_instances=view["max_instances"], sessions=view["sessions"],
        create_queue=view["queues"].get("sandbox.create", 0), waiting=view["waiting"],
        refresh=REFRESH, generated=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now)))


def _ago(now: float, then: float | None) -> str:
    """``42s``, ``5m 03s``, ``2h 10m``, ``3d 4h``: short enough for a table cell."""
    if not then:
        return ""
    seconds = max(0, int(now - then))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"
