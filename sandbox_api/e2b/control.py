"""E2B's control plane: create, connect (resume), get, list, kill, timeout, pause, metrics.

Views validate with marshmallow and call the Fleet; errors are raised and answered as E2B's
``{code, message}`` in one place (sandbox_api/e2b/__init__.py).
"""

from __future__ import annotations

import base64
import logging
import time
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, jsonify, request

from sandbox_core.errors import BadRequest, Conflict, NotFound
from sandbox_core.fleet import Fleet

from .. import openapi
from . import sandboxes, streams
from .schemas import ConnectBody, CreateBody, ListQuery, ManyMetricsQuery, MetricsQuery, TimeoutBody

log = logging.getLogger(__name__)

bp = Blueprint("e2b_control", __name__)


def fleet() -> Fleet:
    return current_app.extensions["sandbox_fleet"]


def _json() -> dict:
    body = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


@bp.route("/sandboxes", methods=["POST"])
@bp.route("/v2/sandboxes", methods=["POST"])
def create():
    body = CreateBody().load(_json())
    f = fleet()
    sandbox_type = sandboxes.sandbox_type(f, body["templateID"])
    if body["envVars"]:
        # Create-time envVars are the sandbox's environment: a warm one was started without them.
        name = f.create(sandbox_type, environment=body["envVars"])
    else:
        name = f.acquire(sandbox_type, None)
    try:
        sandboxes.hand_out(f, name, sandboxes.new_fields(body["templateID"], body["timeout"],
                                                         body["metadata"]))
        record = f.store.get(name)
    except Exception:
        f.release(name)  # never a sandbox nobody can reach
        raise
    log.info("sandbox %s: e2b sandbox %s (template %s, timeout %ss)", name,
             sandboxes.sandbox_id(record), body["templateID"], body["timeout"])
    return jsonify(sandboxes.created(record)), 201


@bp.route("/sandboxes/<sandbox_id>/connect", methods=["POST"])
@bp.route("/v2/sandboxes/<sandbox_id>/connect", methods=["POST"])
@bp.route("/sandboxes/<sandbox_id>/resume", methods=["POST"])
def connect(sandbox_id: str):
    body = ConnectBody().load(_json())
    f = fleet()
    record = sandboxes.find(f, sandbox_id)
    name, status = record["container_name"], 200
    if record.get("e2b_paused"):
        f.control(name, "unpause")
        f.store.update(name, e2b_paused="")
        log.info("sandbox %s: resumed", name)
        status = 201
    # As E2B: connecting never shortens a sandbox's life, only extends it.
    if time.time() + body["timeout"] > float(record.get("e2b_expires_at") or 0):
        sandboxes.set_expiry(f, name, body["timeout"])
    return jsonify(sandboxes.created(f.store.get(name) or record)), status


@bp.route("/sandboxes/<sandbox_id>", methods=["GET"])
def get(sandbox_id: str):
    return jsonify(sandboxes.listed(fleet(), sandboxes.find(fleet(), sandbox_id), with_token=True))


@bp.route("/sandboxes/<sandbox_id>", methods=["DELETE"])
def kill(sandbox_id: str):
    f = fleet()
    record = sandboxes.find(f, sandbox_id)
    f.release(record["container_name"])
    return Response(status=204)


@bp.route("/sandboxes/<sandbox_id>/timeout", methods=["POST"])
def set_timeout(sandbox_id: str):
    body = TimeoutBody().load(_json())
    f = fleet()
    record = sandboxes.find(f, sandbox_id)
    sandboxes.set_expiry(f, record["container_name"], body["timeout"])
    return Response(status=204)


@bp.route("/sandboxes/<sandbox_id>/pause", methods=["POST"])
def pause(sandbox_id: str):
    f = fleet()
    record = sandboxes.find(f, sandbox_id)
    name = record["container_name"]
    if record.get("e2b_paused"):
        raise Conflict(f"sandbox {sandbox_id} is already paused")
    f.control(name, "pause")
    f.store.update(name, e2b_paused="1")
    log.info("sandbox %s: paused", name)
    return Response(status=204)


@bp.route("/sandboxes/<sandbox_id>/metrics", methods=["GET"])
@openapi.doc(summary="A sandbox's CPU, memory and disk use now (one sample; none while paused)",
             query=MetricsQuery, tags=["e2b"],
             responses={200: "a list of SandboxMetric", 400: "a bad start or end",
                        404: "no such sandbox"})
def metrics(sandbox_id: str):
    query = MetricsQuery().load(request.args.to_dict())
    sample = _sample(fleet(), sandboxes.find(fleet(), sandbox_id))
    if sample is None or not (query["start"] or 0) <= sample["timestampUnix"] <= \
            (query["end"] if query["end"] is not None else sample["timestampUnix"]):
        return jsonify([])
    return jsonify([sample])


@bp.route("/sandboxes/metrics", methods=["GET"])
@openapi.doc(summary="The latest metrics of several sandboxes, by sandboxID", tags=["e2b"],
             query=ManyMetricsQuery,
             responses={200: "{sandboxes: {sandboxID: SandboxMetric}}; unknown and paused "
                             "sandboxes are left out", 400: "no or too many sandbox_ids"})
def metrics_of_many():
    query = ManyMetricsQuery().load(request.args.to_dict())
    f, found = fleet(), {}
    for sandbox_id in dict.fromkeys(i for i in query["sandbox_ids"].split(",") if i):
        try:
            sample = _sample(f, sandboxes.find(f, sandbox_id))
        except NotFound:
            continue
        if sample is not None:
            found[sandbox_id] = sample
    return jsonify(sandboxes=found)


def _sample(f: Fleet, record: dict) -> dict | None:
    """The agent's reading of its cgroup (images/agent/sandbox_agent/envd_metrics.py); None for
    a paused sandbox, whose processes (the agent too) are frozen."""
    if record.get("e2b_paused"):
        return None
    reply = streams.call(f, record, "GET", "envd/metrics", timeout=30)
    if reply.status != 200:
        raise streams.agent_error(reply.status, reply.detail)
    return reply.json()


@bp.route("/sandboxes", methods=["GET"])
def list_running():
    """The older list: every running sandbox, no paging."""
    query = ListQuery().load({"metadata": request.args.get("metadata", ""), "state": "running"})
    return jsonify([sandboxes.listed(fleet(), r) for r in _matching(query)])


@bp.route("/v2/sandboxes", methods=["GET"])
def list_v2():
    query = ListQuery().load(request.args.to_dict())
    found = _matching(query)
    start = _offset(query["nextToken"])
    page = found[start:start + query["limit"]]
    response = jsonify([sandboxes.listed(fleet(), r) for r in page])
    if start + query["limit"] < len(found):
        response.headers["x-next-token"] = base64.urlsafe_b64encode(
            str(start + query["limit"]).encode()).decode()
    return response


def _matching(query: dict) -> list[dict]:
    wanted = set(query["state"].split(","))
    pairs = parse_qsl(query["metadata"], keep_blank_values=True)
    found = []
    for record in sandboxes.live_records(fleet()):
        meta = sandboxes.metadata(record)
        if sandboxes.state(record) in wanted and all(meta.get(k) == v for k, v in pairs) and \
                query["template"] in ("", record["e2b_template"]):
            found.append(record)
    return found[::-1] if query["order"] == "desc" else found


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(token.encode()).decode()))
    except ValueError:
        raise BadRequest("nextToken is not a token this server gave") from None

