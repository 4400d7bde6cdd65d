"""E2B sandboxes as fleet records: templates, the fields E2B adds, and how the SDK sees them.

An E2B sandbox is an ordinary fleet record (same pools, cap, hosts, reaper) with a few fields of
its own: ``e2b_template``, ``e2b_token`` (its envdAccessToken), ``e2b_metadata`` (JSON),
``e2b_expires_at`` (its time to live, read by the reaper, sandbox_core/reaper.py) and ``e2b_paused``. Its
sandboxID is the record's session id.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import time
from datetime import UTC, datetime

from sandbox_core import limits, states
from sandbox_core.errors import BadRequest, NotFound
from sandbox_core.fleet import Fleet
from sandbox_core.registry import get_spec, known_types

#: E2B's own template names and the fleet types that serve them; any other registered type is
#: served under its own name.
TEMPLATES = {"base": "base", "code-interpreter-v1": "code-interpreter", "desktop": "gui"}
#: The envd version whose features are all served (see docs/e2b.md): stdin, the default user,
#: close_stdin, octet-stream uploads. 0.6.2 would add file metadata, not served.
ENVD_VERSION = "0.5.7"
MAX_TIMEOUT = 24 * 3600
CLIENT_ID = "sandbox-fleet"


def sandbox_type(fleet: Fleet, template: str) -> str:
    """The fleet type serving a template, or BadRequest naming the templates there are."""
    name = TEMPLATES.get(template, template)
    try:
        get_spec(fleet.settings, name)
    except BadRequest:
        known = sorted(set(TEMPLATES) | (set(known_types()) - set(TEMPLATES.values())))
        raise BadRequest(f"unknown template {template!r}; templates here: {', '.join(known)}") \
            from None
    return name


def new_fields(template: str, timeout: int, metadata: dict) -> dict:
    now = time.time()
    return {"e2b_template": template, "e2b_token": secrets.token_urlsafe(24),
            "e2b_metadata": json.dumps(metadata), "e2b_started_at": now,
            "e2b_expires_at": now + timeout, "e2b_paused": ""}


def hand_out(fleet: Fleet, name: str, fields: dict) -> None:
    """Write the E2B fields, and mark a just-created sandbox (``warm`` until a session takes it,
    as upstream) ``running``: it is handed out, and reconcile fails a warm one whose container
    is not running, which a paused one is not. A record released meanwhile is left as it is."""
    fleet.store.hand_out(name)
    fleet.store.update(name, claimed_at=time.time(), **fields)
    fleet.store.reschedule(name, fields["e2b_expires_at"])


def set_expiry(fleet: Fleet, name: str, timeout: int) -> float:
    """The sandbox ends ``timeout`` seconds from now (the reaper looks at it then)."""
    at = time.time() + timeout
    fleet.store.update(name, e2b_expires_at=at)
    fleet.store.reschedule(name, at)
    return at


def find(fleet: Fleet, sandbox_id: str) -> dict:
    """The live E2B record of a sandboxID, or NotFound."""
    record = fleet.store.find(sandbox_id) if sandbox_id else None
    if record is None or not record.get("e2b_template") or \
            record["state"] not in (states.RUNNING, states.WARM):
        raise NotFound(f"sandbox {sandbox_id} not found")
    return record


def authorize(record: dict, token: str | None) -> None:
    """The envdAccessToken opens its own sandbox and no other."""
    expected = record.get("e2b_token") or ""
    if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("a valid X-Access-Token for this sandbox is required")


class Unauthorized(BadRequest):
    status = 401


def sandbox_id(record: dict) -> str:
    return record["session_id"]


def _time(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp or time.time(), UTC).isoformat().replace("+00:00", "Z")


def metadata(record: dict) -> dict:
    try:
        return json.loads(record.get("e2b_metadata") or "{}")
    except ValueError:
        return {}


def state(record: dict) -> str:
    return "paused" if record.get("e2b_paused") else "running"


def created(record: dict) -> dict:
    """The body of create and connect."""
    return {"templateID": record["e2b_template"], "sandboxID": sandbox_id(record),
            "clientID": CLIENT_ID, "envdVersion": ENVD_VERSION,
            "envdAccessToken": record.get("e2b_token")}


def listed(fleet: Fleet, record: dict, with_token: bool = False) -> dict:
    """An item of the list; with the token, the body of GET /sandboxes/{id}."""
    cpus, memory_mb = _limits(fleet, record)
    item = {"templateID": record["e2b_template"], "sandboxID": sandbox_id(record),
            "clientID": CLIENT_ID, "startedAt": _time(_float(record.get("e2b_started_at"))),
            "endAt": _time(_float(record.get("e2b_expires_at"))),
            "cpuCount": cpus, "memoryMB": memory_mb,
            "diskSizeMB": 0, "state": state(record), "envdVersion": ENVD_VERSION,
            "metadata": metadata(record)}
    if with_token:
        item["envdAccessToken"] = record.get("e2b_token")
    return item


def _float(value) -> float | None:
    return float(value) if value else None


def _limits(fleet: Fleet, record: dict) -> tuple[int, int]:
    """(cpuCount, memoryMB) the sandbox runs with: its create's, else its type's (0: none)."""
    try:
        spec = get_spec(fleet.settings, record.get("sandbox_type") or "")
        memory, cpus = limits.effective(spec.sandbox_type, spec.resource_limits, record)
        return max(1, math.ceil(cpus or 1)), limits.size_bytes(memory, "memory") >> 20 if memory else 0
    except (BadRequest, ValueError):  # a type unregistered since, or an odd record
        return 1, 0


def live_records(fleet: Fleet) -> list[dict]:
    """Every live E2B sandbox, oldest first."""
    records = []
    for name in fleet.store.live_names():
        record = fleet.store.get(name)
        if record and record.get("e2b_template") and record["state"] in (states.RUNNING, states.WARM):
            records.append(record)
    return sorted(records, key=lambda r: (_float(r.get("e2b_started_at")) or 0, r["container_name"]))
