"""Bearer-token auth, exactly as the agentscope-runtime server answers (401 bodies and header)."""

from __future__ import annotations

import hmac

from flask import Flask, current_app, jsonify, request

#: Paths anyone may reach, as upstream: health, the GUI desktop (it has its own token), docs.
PUBLIC_PREFIXES = ("/health", "/desktop/", "/docs", "/openapi.json")


def init_app(app: Flask) -> None:
    app.before_request(_check_bearer)


def _check_bearer():
    token = current_app.config["SANDBOX_SETTINGS"].BEARER_TOKEN
    if not token or request.path.startswith(PUBLIC_PREFIXES):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return _unauthorized("Authentication required")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _unauthorized("Invalid authentication credentials")
    return None


def _unauthorized(detail: str):
    response = jsonify(detail=detail)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = "Bearer"
    return response
