"""The Flask app factory: ``create_app(settings)``.

The app validates requests and hands work to the fleet's workers through Celery; it never touches
a container runtime.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from sandbox_core.errors import SandboxError
from sandbox_core.fleet import Fleet
from sandbox_core.registry import load_extensions
from sandbox_core.settings import Settings, extensions_from_env, load_settings

from . import auth, dashboard, desktop, e2b, guards, metrics, openapi, proxy, rpc

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, extensions: list[str] | None = None) -> Flask:
    settings = settings or load_settings()
    load_extensions(settings, extensions_from_env() if extensions is None else extensions)

    app = Flask("sandbox_api")
    app.request_class = guards.Request
    app.json = guards.StrictJSON(app)
    app.config.update(
        SANDBOX_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.FLEET_MAX_BODY_MB * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    app.json.compact = True
    app.url_map.merge_slashes = True
    app.url_map.strict_slashes = False
    app.wsgi_app = guards.CapBody(app.wsgi_app, settings)
    if settings.FLEET_TRUSTED_PROXIES:
        n = settings.FLEET_TRUSTED_PROXIES
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)

    app.extensions["sandbox_fleet"] = Fleet.connect(settings, "sandbox_api")

    metrics.init_app(app)  # before auth: its after_request also counts what auth refuses
    auth.init_app(app)
    app.register_blueprint(rpc.bp)
    app.register_blueprint(proxy.bp)
    app.register_blueprint(desktop.bp)
    e2b.init_app(app)  # E2B's control plane, envd and code interpreter (docs/e2b.md)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(dashboard.bp)
    app.add_url_rule("/health", "health", _health)
    app.add_url_rule("/fleet/status", "fleet_status", _status)
    _register_error_handlers(app)
    return app


@openapi.doc(summary="Health: 200 while the state store answers, else 503", tags=["operations"],
             responses={200: "healthy", 503: openapi.ErrorReply})
def _health():
    from flask import current_app

    fleet: Fleet = current_app.extensions["sandbox_fleet"]
    try:
        fleet.store.ping()
    except redis.RedisError as e:
        return jsonify(status="unhealthy", detail=f"state store unreachable: {e}"), 503
    # Upstream answers "version" with the default type list, not a release: kept for its clients.
    return jsonify(status="healthy", version=fleet.settings.DEFAULT_SANDBOX_TYPE)


@openapi.doc(summary="Pools (warm, starting, target per type), live sandboxes, the cap, sessions",
             tags=["operations"])
def _status():
    from flask import current_app

    return jsonify(current_app.extensions["sandbox_fleet"].status())


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(SandboxError)
    def sandbox_error(e: SandboxError):
        return jsonify(detail=e.detail), e.status

    @app.errorhandler(ValidationError)
    def invalid_body(e: ValidationError):
        return jsonify(detail=_describe(e.messages)), 400

    @app.errorhandler(redis.RedisError)
    def store_down(e: redis.RedisError):
        log.error("state store error: %s", e)
        return jsonify(detail=f"state store unavailable: {e}"), 503

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        if e.code == 413:  # werkzeug's own (a Content-Length over the limit) says too little
            return jsonify(detail=guards.too_large(app.config["SANDBOX_SETTINGS"])), 413
        return jsonify(detail=e.description), e.code

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        log.exception("unexpected error")
        return jsonify(detail=f"internal error: {type(e).__name__}"), 500


def _describe(messages, prefix: str = "") -> str:
    """marshmallow's nested messages as one line: ``field: problem; other: problem``."""
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            text = _describe(value, name)
            parts.append(text if isinstance(value, dict) else f"{name}: {text}")
        return "; ".join(parts)
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages)
    return str(messages)
