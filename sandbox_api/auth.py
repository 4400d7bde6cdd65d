"""Bearer-token auth, exactly as the agentscope-runtime server answers (401 bodies and header),
compared in constant time, with failed attempts rate-limited per client address.

The client address is the peer's, or, with FLEET_TRUSTED_PROXIES=n, what the n proxies in front
of the API wrote in X-Forwarded-For (werkzeug's ProxyFix, set up in app.py): a header nobody
vouches for is never believed, or a guesser could pick a fresh address for every try.
"""

from __future__ import annotations

import hmac
import threading
import time

from flask import Flask, current_app, jsonify, request

#: Paths anyone may reach, as upstream: health, the GUI desktop (it has its own token), docs.
#: An app may add some (``SANDBOX_PUBLIC_PATHS``: /metrics with FLEET_METRICS_PUBLIC).
PUBLIC_PREFIXES = ("/health", "/desktop/", "/docs", "/openapi.json")
#: Pages a browser opens, which cannot send the header: the token may come as ``?token=`` (the
#: page then sets it as an HttpOnly cookie, see dashboard.py) or in that cookie.
BROWSER_PREFIXES = ("/dashboard",)
TOKEN_COOKIE = "sandbox_fleet_token"
WINDOW = 60

_blocked: dict[str, float] = {}  # client address -> blocked until (this process)
_blocked_lock = threading.Lock()


def init_app(app: Flask) -> None:
    app.before_request(_check_bearer)


def _check_bearer():
    settings = current_app.config["SANDBOX_SETTINGS"]
    token = settings.BEARER_TOKEN
    public = (*PUBLIC_PREFIXES, *current_app.config.get("SANDBOX_PUBLIC_PATHS", ()))
    if not token or request.path.startswith(public):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if not header and request.path.startswith(BROWSER_PREFIXES):
        scheme, given = "bearer", request.args.get("token") or request.cookies.get(TOKEN_COOKIE, "")
    # The right token always passes: a blocked address (someone guessing from behind the same
    # NAT or proxy) must not lock the legitimate client out. Only wrong or missing ones get 429.
    if scheme.lower() == "bearer" and given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    client = request.remote_addr or "unknown"
    if _is_blocked(client):
        return _too_many()
    if scheme.lower() != "bearer" or not given:
        return _unauthorized("Authentication required")
    if _count_failure(client, settings.FLEET_AUTH_FAILURES_PER_MINUTE):
        return _too_many()
    return _unauthorized("Invalid authentication credentials")


def _count_failure(client: str, limit: int) -> bool:
    """Count a wrong token across every API process; True once the client is over the limit."""
    if not limit:
        return False
    store = current_app.extensions["sandbox_fleet"].store
    if store.count_auth_failure(client, WINDOW) <= limit:
        return False
    with _blocked_lock:
        _blocked[client] = time.monotonic() + WINDOW
    return True


def _is_blocked(client: str) -> bool:
    with _blocked_lock:
        until = _blocked.get(client)
        if until is None:
            return False
        if until < time.monotonic():
            del _blocked[client]
            return False
        return True


def _unauthorized(detail: str):
    response = jsonify(detail=detail)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _too_many():
    response = jsonify(detail=f"too many failed authentications from this address; "
                              f"try again in {WINDOW} seconds")
    response.status_code = 429
    response.headers["Retry-After"] = str(WINDOW)
    return response
