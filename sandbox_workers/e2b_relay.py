"""Relay one E2B stream from a sandbox's agent to the API process that serves it: a process's
output, a code cell's, or a directory watcher's events.

The agent keeps each process's output in a log read by cursor (envd_process.py); this job
long-polls it and pushes every event onto a Redis list the API blocks on (``BLPOP``), so output
reaches the client as it is produced, never by polling Redis. The job stops when the process
ends, when the stream's deadline passes, or when the API stops listening (its client went away):
the process itself keeps running, and a later Connect reattaches to it. A watcher is the
stream's own: it is removed when the relay stops.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sandbox_core.errors import SandboxError

log = logging.getLogger(__name__)

#: Longest a single read of the agent waits for output (also how often the listener is checked).
POLL_WAIT = 5.0
#: Seconds a stream's list outlives its last push (a reader that is slow, not gone).
LIST_TTL = 120


def relay(ctx, address: dict, stream_id: str, timeout: float, start: dict | None = None,
          process: dict | None = None, kind: str = "process") -> None:
    """Start a process (``start``: envd's StartRequest) or follow one (``process``: pid/tag);
    with ``kind="execute"``, run a code cell (``start``: the /execute body) and relay its
    outputs; with ``kind="watch"``, watch a folder (``start``: envd's WatchDirRequest)."""
    store, client = ctx.store, ctx.agent

    def push(message: dict) -> None:
        store.push_to_stream(stream_id, message, LIST_TTL)

    def agent(path: str, body: dict, wait: float = 0) -> Any:
        response = client.request(address, "POST", path, json_body=body, timeout=wait + 30)
        data = response.json()
        if response.status != 200:
            return push({"error": {"status": response.status,
                                   "message": (data or {}).get("detail", "agent error")}})
        return data

    deadline = time.monotonic() + timeout
    read_path, selector, cursor = f"/envd/{kind}/read", None, 0
    try:
        if kind == "watch":
            created = agent("/envd/watch/create", start or {})
            if created is None:
                return
            selector = {"watcherId": created["watcherId"]}
            push({"event": {"start": {}}})
        elif kind == "execute":
            started = agent("/envd/execute/start", start or {})
            if started is None:
                return
            selector = {"id": started["id"]}
            push({"started": True})
        elif start is not None:
            started = agent("/envd/process/start", start)
            if started is None:
                return
            selector = {"process": {"pid": started["pid"]}}
        else:
            first = agent(read_path, {"process": process, "cursor": 1 << 62})
            if first is None:
                return
            selector, cursor = {"process": {"pid": first["pid"]}}, first["cursor"]  # as envd
        if kind == "process":
            push({"event": {"start": {"pid": selector["process"]["pid"]}}})
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                after = "" if kind == "watch" else "; it keeps running in the sandbox"
                return push({"error": {"status": 504,
                                       "message": f"the stream's deadline passed{after}"}})
            if not store.is_listened(stream_id):
                log.info("sandbox %s: e2b %s stream has no listener; what it follows keeps "
                         "running", address["container_name"], kind)
                return None
            got = agent(read_path, {**selector, "cursor": cursor, "wait": min(POLL_WAIT, left)},
                        POLL_WAIT)
            if got is None:
                return None
            for event in got["events"]:
                push({"event": event})
            cursor = got["cursor"]
            if got["end"] is not None:
                if kind == "process":
                    return push({"event": {"end": got["end"]}, "done": True})
                return push({"done": True})
    except SandboxError as e:
        push({"error": {"status": e.status, "message": e.detail}})
    finally:
        if kind == "watch" and selector is not None:
            _remove_watcher(client, address, selector)
    return None


def _remove_watcher(client, address: dict, selector: dict) -> None:
    try:
        client.request(address, "POST", "/envd/watch/remove", json_body=selector, timeout=30)
    except SandboxError as e:  # the sandbox went: so did its watcher
        log.info("sandbox %s: watcher not removed: %s", address["container_name"], e.detail)
