"""The E2B API on the fleet's own port: ``init_app(app)`` (docs/e2b.md).

E2B's control plane (``/sandboxes``, ``/v2/sandboxes``) and, for requests that name a sandbox in
``E2b-Sandbox-Id`` (the SDK with ``E2B_SANDBOX_URL`` set to this API), envd and the code
interpreter. They are served by an app of their own in front of the agentscope one: E2B
authenticates with ``X-API-KEY`` (the same BEARER_TOKEN) and per-sandbox access tokens, has its
own error shapes, and its ``/health`` means a sandbox's, not the fleet's.
"""

from __future__ import annotations

import hmac
import logging

import redis
from flask import Flask, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from sandbox_core.errors import BadRequest, SandboxError, Unavailable

from .. import auth, guards
from . import code, control, envd

log = logging.getLogger(__name__)

CONTROL_PREFIXES = ("/sandboxes", "/v2/sandboxes")
#: Seconds the SDK waits before it retries a create the cap or a busy fleet refused.
RETRY_AFTER = 2


def init_app(app: Flask) -> None:
    """Serve the E2B API in front of ``app`` (same port, same Fleet, same settings)."""
    settings = app.config["SANDBOX_SETTINGS"]
    e2b = Flask("sandbox_api.e2b", static_folder=None)
    e2b.json = guards.StrictJSON(e2b)
    e2b.config.update(SANDBOX_SETTINGS=settings,
                      MAX_CONTENT_LENGTH=settings.FLEET_MAX_BODY_MB * 1024 * 1024)
    e2b.url_map.strict_slashes = False
    e2b.extensions["sandbox_fleet"] = app.extensions["sandbox_fleet"]
    e2b.before_request(_check_api_key)
    for blueprint in (control.bp, envd.bp, code.bp):
        e2b.register_blueprint(blueprint)
    _register_error_handlers(e2b)
    wsgi = e2b.wsgi_app
    if settings.FLEET_TRUSTED_PROXIES:
        n = settings.FLEET_TRUSTED_PROXIES
        wsgi = ProxyFix(wsgi, x_for=n, x_proto=n)
    app.extensions["e2b_app"] = e2b
    app.wsgi_app = _Dispatch(wsgi, app.wsgi_app)


class _Dispatch:
    """E2B requests to the E2B app, everything else to the agentscope one."""

    def __init__(self, e2b, other) -> None:
        self.e2b, self.other = e2b, other

    def __call__(self, environ: dict, start_response):
        if environ.get("HTTP_E2B_SANDBOX_ID") or \
                environ.get("PATH_INFO", "").startswith(CONTROL_PREFIXES):
            return self.e2b(environ, start_response)
        return self.other(environ, start_response)


def _is_envd() -> bool:
    return "E2b-Sandbox-Id" in request.headers


def _check_api_key():
    if _is_envd():
        if request.path == "/files" and request.method == "POST":
            request.max_content_length = None  # uploads stream through in chunks, any size
        return None  # each call is checked against its sandbox's own access token (envd.target)
    settings = _settings()
    token = settings.BEARER_TOKEN
    if not token:
        return None
    given = request.headers.get("X-API-KEY", "")
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if not given and scheme.lower() == "bearer":
        given = bearer.strip()
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    client = request.remote_addr or "unknown"
    if auth._is_blocked(client) or auth._count_failure(client, settings.FLEET_AUTH_FAILURES_PER_MINUTE):
        response = jsonify(code=429, message=f"too many failed authentications from this address; "
                                             f"try again in {auth.WINDOW} seconds")
        response.status_code = 429
        response.headers["Retry-After"] = str(auth.WINDOW)
        return response
    response = jsonify(code=401, message="Invalid API key: send the fleet's BEARER_TOKEN as "
                                         "X-API-KEY (E2B_API_KEY)")
    response.status_code = 401
    return response


def _settings():
    from flask import current_app

    return current_app.config["SANDBOX_SETTINGS"]


def _answer(e: SandboxError):
    if _is_envd():
        if request.path.startswith(("/process.", "/filesystem.")):
            return envd.rpc_error(e)
        return envd.rest_error(e)
    response = jsonify(code=e.status, message=e.detail)
    response.status_code = e.status
    if e.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(SandboxError)
    def sandbox_error(e: SandboxError):
        if e.status >= 500:
            log.warning("e2b %s %s: %s", request.method, request.path, e.detail)
        return _answer(e)

    @app.errorhandler(ValidationError)
    def invalid_body(e: ValidationError):
        from ..app import _describe

        return _answer(BadRequest(_describe(e.messages)))

    @app.errorhandler(redis.RedisError)
    def store_down(e: redis.RedisError):
        log.error("state store error: %s", e)
        return _answer(Unavailable(f"state store unavailable: {e}"))

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        error = SandboxError(e.description or e.name)
        error.status = e.code or 500
        return _answer(error)

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unexpected error in the E2B API")
        return _answer(SandboxError(f"internal error: {type(e).__name__}"))
