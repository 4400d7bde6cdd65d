"""E2B's code interpreter (port 49999): ``/execute`` as NDJSON and the ``/contexts`` routes.

A cell runs in the sandbox's IPython context (images/agent/sandbox_agent/envd_code.py); its
outputs are relayed as they are produced (the same Redis relay as process output) and written
one JSON object a line, as E2B's server writes them.
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

#: How long a cell may run (the SDK's own default timeout is 300 s); the relay follows it so long.
CELL_TIMEOUT = 3600.0


@bp.route("/execute", methods=["POST"])
def execute():
    body = small_json()
    if not isinstance(body.get("code"), str):
        raise BadRequest("code must be a string")
    if body.get("context_id") and body.get("language"):
        raise BadRequest("give context_id or language, not both")
    record, f = target(), fleet()
    stream_id = streams.open_stream(f, record, CELL_TIMEOUT, kind="execute",
                                    start={**body, "timeout": CELL_TIMEOUT})
    messages = streams.events(f, stream_id, CELL_TIMEOUT)
    first = next(messages)
    while "event" in first and "keepalive" in first["event"]:
        first = next(messages)
    if "error" in first:  # the cell did not start (an unknown context...): a plain HTTP error
        messages.close()
        raise streams.agent_error(first["error"]["status"], first["error"]["message"])
    return Response(_lines(messages), status=200, content_type="application/x-ndjson")


def _lines(messages: Iterator[dict]) -> Iterator[bytes]:
    """The relayed outputs, one JSON object a line, as the cell produces them."""
    try:
        for message in messages:
            if "error" in message:
                text = message["error"]["message"]
                yield _line({"type": "error", "name": "SandboxError", "value": text,
                             "traceback": text})
                return
            if message.get("done"):
                return
            output = message["event"]
            if "keepalive" in output:
                continue
            if output.get("type") in ("stdout", "stderr"):
                output = {**output, "timestamp": time.time_ns()}  # E2B: ns since the epoch
            yield _line(output)
    finally:
        messages.close()  # stops the relay if the client went away


def _line(output: dict) -> bytes:
    return json.dumps(output).encode() + b"\n"


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
