"""Calls into an E2B sandbox's agent through the fleet: one-shot ones, and process streams.

One-shot calls ride the ``agent`` job's ``proxy`` operation like every other tool call. A process
stream is an ``agent`` job (``e2b_stream``, sandbox_workers/e2b_relay.py) that pushes events on a
Redis list this process blocks on; while the client listens, this side keeps a flag alive, and
once it is gone the worker stops relaying (the process runs on).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sandbox_core import jobs
from sandbox_core.errors import SandboxError, Unavailable
from sandbox_core.fleet import Fleet

#: Seconds between keepalives on a quiet stream (each one also tells a gone client apart).
KEEPALIVE = 10.0
#: Seconds of one blocking read of the stream's list.
WAIT_SLICE = 1.0
LISTEN_TTL = 30


class AgentReply:
    def __init__(self, reply: dict) -> None:
        self.status = reply["status"]
        self.body = base64.b64decode(reply["body"])

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def detail(self) -> str:
        try:
            return str(self.json().get("detail"))
        except (ValueError, AttributeError):
            return self.body.decode(errors="replace")[:2000]


def call(fleet: Fleet, record: dict, method: str, path: str, body: Any = None,
         raw: bytes | None = None, query: str = "", timeout: float = 60) -> AgentReply:
    """One request to the sandbox's agent (``path`` under its /envd routes)."""
    if body is not None:
        raw = json.dumps(body).encode()
    reply = fleet.agent_call(
        record["container_name"], "proxy", timeout=timeout, method=method, path=path, query=query,
        headers={"Content-Type": "application/json" if body is not None else
                 "application/octet-stream"},
        body=base64.b64encode(raw).decode() if raw else None)
    return AgentReply(reply)


def call_json(fleet: Fleet, record: dict, path: str, body: Any, timeout: float = 60) -> Any:
    """A JSON call whose error answers become the matching SandboxError status."""
    reply = call(fleet, record, "POST", path, body, timeout=timeout)
    if reply.status != 200:
        raise agent_error(reply.status, reply.detail)
    return reply.json()


def agent_error(status: int, detail: str) -> SandboxError:
    error = SandboxError(detail)
    error.status = status
    return error


def open_stream(fleet: Fleet, record: dict, timeout: float, **payload: Any) -> str:
    """Send the relay job; returns the stream's id (also the job's id)."""
    stream_id = uuid.uuid4().hex
    fleet.store.listen(stream_id, LISTEN_TTL)
    name = record["container_name"]
    fleet.job_client.send(jobs.AGENT, {"name": name, "op": "e2b_stream", "timeout": timeout,
                                 "stream_id": stream_id, **payload},
                    host=record["host"], job_id=stream_id, expires=timeout)
    return stream_id


def events(fleet: Fleet, stream_id: str, timeout: float) -> Iterator[dict]:
    """The relay's messages as they come, keepalives on quiet stretches; ends after an end
    event or an error (``{"error": {status, message}}``)."""
    store = fleet.store
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                yield {"error": {"status": 504, "message": "the stream's deadline passed; the "
                                 "process keeps running (reattach with connect)"}}
                return
            store.listen(stream_id, LISTEN_TTL)
            # Short blocking reads (a Redis client's socket timeout may be shorter than a
            # keepalive interval), each followed by a look at the relaying worker's health.
            message = store.pop_from_stream(stream_id, min(WAIT_SLICE, deadline - now))
            if message is None:
                runner = store.worker_of(stream_id)
                if runner and not store.worker_alive(runner):
                    error = Unavailable(f"worker {runner} died while relaying the stream")
                    yield {"error": {"status": 503, "message": error.detail}}
                    return
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    quiet_since = time.monotonic()
                    yield {"event": {"keepalive": {}}}
                continue
            quiet_since = time.monotonic()
            yield message
            if "error" in message or message.get("done"):
                return
    finally:
        store.stop_listening(stream_id)
