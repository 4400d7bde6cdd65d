"""E2B's code interpreter (port 49999): ``/execute`` as NDJSON and the ``/contexts`` routes.

A cell runs in the sandbox's IPython context (images/agent/sandbox_agent/envd_code.py) as one
agent call; its outputs are then written one JSON object a line, as E2B's server writes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify

from sandbox_core.errors import BadRequest

from . import streams
from .envd import fleet, small_json, target

bp = Blueprint("e2b_code", __name__)

#: How long a cell may run (the SDK's own default timeout is 300 s).
CELL_TIMEOUT = 3600.0


@bp.route("/execute", methods=["POST"])
def execute():
    body = small_json()
    if not isinstance(body.get("code"), str):
        raise BadRequest("code must be a string")
    if body.get("context_id") and body.get("language"):
        raise BadRequest("give context_id or language, not both")
    record = target()
    outputs = streams.call_json(fleet(), record, "envd/execute",
                                {**body, "timeout": CELL_TIMEOUT}, timeout=CELL_TIMEOUT)
    return Response(_lines(outputs), status=200, content_type="application/x-ndjson")


def _lines(outputs: list[dict]) -> Iterator[bytes]:
    stamp = time.time_ns()  # E2B: nanoseconds since the epoch
    for output in outputs:
        if output.get("type") in ("stdout", "stderr"):
            output = {**output, "timestamp": stamp}
        yield json.dumps(output).encode() + b"\n"


@bp.route("/contexts", methods=["POST"])
def create_context():
    return jsonify(streams.call_json(fleet(), target(True), "envd/contexts", small_json()))


@bp.route("/contexts", methods=["GET"])
def list_contexts():
    reply = streams.call(fleet(), target(True), "GET", "envd/contexts")
    if reply.status != 200:
        raise streams.agent_error(reply.status, reply.detail)
    return jsonify(reply.json())


@bp.route("/contexts/<context_id>", methods=["DELETE"])
def delete_context(context_id: str):
    streams.call_json(fleet(), target(True), "envd/contexts/delete", {"id": context_id})
    return Response(status=204)


@bp.route("/contexts/<context_id>/restart", methods=["POST"])
def restart_context(context_id: str):
    streams.call_json(fleet(), target(True), "envd/contexts/restart", {"id": context_id})
    return Response(status=204)
