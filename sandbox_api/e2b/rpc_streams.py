"""envd's streaming Connect calls: server streams (a process's output, a folder's events) and the
client stream of input (StreamInput).

A server stream is relayed by an ``agent`` job on the owning host (sandbox_workers/e2b_relay.py)
and written here as Connect envelopes as its messages come, with keepalives on quiet stretches;
a client that goes away stops the relay, never what it follows. StreamInput reads the request's
envelopes as they arrive and hands each one to the process at once (one agent call each).
Errors, once a stream is open, travel in its end-of-stream envelope, as Connect says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response

from sandbox_core.errors import BadRequest, SandboxError
from sandbox_core.fleet import Fleet

from . import connect, streams

log = logging.getLogger(__name__)

#: (service, method) -> what the relay follows.
SERVER_STREAMS = {("process.Process", "Start"): "process", ("process.Process", "Connect"): "process",
                  ("filesystem.Filesystem", "WatchDir"): "watch"}
CLIENT_STREAMS = {("process.Process", "StreamInput")}


def server_stream(f: Fleet, method: str, find: Callable[[], dict], body: bytes,
                  timeout: float) -> Response:
    """Open the relay for ``method`` and answer with its messages as envelopes."""
    try:
        message = connect.first_message(body)
        record = find()
        if method == "Start":
            stream_id = streams.open_stream(f, record, timeout, start=message)
        elif method == "WatchDir":
            _require_path(message)
            stream_id = streams.open_stream(f, record, timeout, kind="watch", start=message)
        else:
            selector = message.get("process") or {}
            if not isinstance(selector, dict) or not (selector.get("pid") or selector.get("tag")):
                raise BadRequest("process.pid or process.tag is required")
            stream_id = streams.open_stream(f, record, timeout, process=selector)
    except ValueError as e:
        return stream_response(iter([connect.end_stream(400, str(e))]))
    except SandboxError as e:
        return stream_response(iter([connect.end_stream(e.status, e.detail)]))
    # A process stream's message holds a ProcessEvent in ``event``; WatchDirResponse is itself
    # the oneof (``{start}``, ``{filesystem}``, ``{keepalive}``).
    return stream_response(_frames(streams.events(f, stream_id, timeout), method != "WatchDir"))


def _require_path(message: dict) -> None:
    if not isinstance(message.get("path"), str) or not message["path"]:
        raise BadRequest("path is required")


def _frames(messages: Iterator[dict], wrapped: bool) -> Iterator[bytes]:
    try:
        for message in messages:
            if "error" in message:
                yield connect.end_stream(message["error"]["status"], message["error"]["message"])
                return
            if "event" in message:
                yield connect.envelope({"event": message["event"]} if wrapped else message["event"])
            if message.get("done"):
                yield connect.end_stream()
                return
        yield connect.end_stream()
    finally:
        messages.close()  # stops the relay if the client went away


def stream_response(frames: Iterator[bytes]) -> Response:
    response = Response(frames, status=200, content_type="application/connect+json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a reverse proxy must not hold the output back
    return response


class DeadlinePassed(SandboxError):
    status = 504


def stream_input(f: Fleet, find: Callable[[], dict], read: Callable[[int], bytes],
                 set_read_timeout: Callable[[float | None], None], timeout: float) -> Response:
    """StreamInput: ``{start: {process}}``, then ``{data: {input: {stdin | pty}}}`` (or
    ``{keepalive: {}}``) envelopes, each written to the process as it arrives. The stream's
    deadline bounds every read, so a client that stops sending does not hold a thread."""
    deadline = time.monotonic() + timeout

    def read_in_time(size: int) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed("the input stream's deadline passed")
        set_read_timeout(left)
        try:
            return read(size)
        except TimeoutError:
            raise DeadlinePassed("the input stream's deadline passed") from None

    sent = 0
    try:
        record = find()
        messages = connect.read_messages(read_in_time)
        selector = _input_target(next(messages, None))
        for message in messages:
            given = _input(message)
            if given is None:
                continue  # a keepalive
            streams.call_json(f, record, "envd/process/input", {"process": selector, "input": given},
                              timeout=max(1.0, min(60.0, deadline - time.monotonic())))
            sent += 1
    except ValueError as e:
        return stream_response(iter([connect.end_stream(400, str(e))]))
    except SandboxError as e:
        if e.status >= 500:
            log.info("e2b StreamInput ended after %d messages: %s", sent, e.detail)
        return stream_response(iter([connect.end_stream(e.status, e.detail)]))
    except OSError as e:  # the client went away mid-stream
        log.info("e2b StreamInput: the client went away after %d messages: %s", sent, e)
        return stream_response(iter([connect.end_stream(499, "the client went away")]))
    finally:
        set_read_timeout(None)
    return stream_response(iter([connect.envelope({}), connect.end_stream()]))


def _input_target(first: dict | None) -> dict:
    start = (first or {}).get("start")
    selector = start.get("process") if isinstance(start, dict) else None
    if not isinstance(selector, dict) or not (selector.get("pid") or selector.get("tag")):
        raise BadRequest("the first message must be start with process.pid or process.tag")
    return selector


def _input(message: dict) -> dict[str, Any] | None:
    if "data" not in message:
        if "keepalive" in message or not message:
            return None
        raise BadRequest("each message after start must be data or keepalive")
    given = (message.get("data") or {}).get("input")
    if not isinstance(given, dict) or not any(isinstance(given.get(k), str) for k in ("stdin", "pty")):
        raise BadRequest("data.input must carry stdin or pty (base64)")
    return given
