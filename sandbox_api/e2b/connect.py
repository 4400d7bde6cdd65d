"""The Connect protocol's JSON framing, as envd speaks it (no I/O here).

Unary calls are plain JSON both ways, errors ``{code, message}`` with the matching HTTP status.
Server streams are envelopes: one flag byte, a 4-byte big-endian length, JSON; the last one has
flag 0x02 and carries ``{}`` or ``{"error": {code, message}}``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

END_STREAM = 0x02
MAX_MESSAGE = 4 << 20

#: HTTP status -> Connect code (as the agent and the fleet answer), and back.
CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
         404: "not_found", 409: "already_exists", 412: "failed_precondition",
         429: "resource_exhausted", 499: "canceled", 500: "internal", 501: "unimplemented",
         502: "unavailable", 503: "unavailable", 504: "deadline_exceeded",
         507: "resource_exhausted"}
STATUSES = {"invalid_argument": 400, "unauthenticated": 401, "permission_denied": 403,
            "not_found": 404, "already_exists": 409, "failed_precondition": 400,
            "resource_exhausted": 429, "canceled": 499, "internal": 500, "unimplemented": 501,
            "unavailable": 503, "deadline_exceeded": 504, "unknown": 500}


def code_of(status: int) -> str:
    return CODES.get(status, "unknown")


def error(status: int, message: str) -> dict[str, str]:
    return {"code": code_of(status), "message": message}


def envelope(message: Any, flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def end_stream(status: int | None = None, message: str = "") -> bytes:
    return envelope({"error": error(status, message)} if status else {}, END_STREAM)


def first_message(body: bytes) -> dict:
    """The first envelope of a streaming request (a server stream sends exactly one)."""
    if len(body) < 5:
        raise ValueError("the request has no Connect envelope")
    flags, size = struct.unpack(">BI", body[:5])
    if flags & 0x01:
        raise ValueError("compressed Connect messages are not supported")
    if size > MAX_MESSAGE or len(body) < 5 + size:
        raise ValueError("the Connect envelope is truncated or too large")
    message = json.loads(body[5:5 + size] or b"{}")
    if not isinstance(message, dict):
        raise ValueError("the Connect message must be a JSON object")
    return message


def read_messages(read: Callable[[int], bytes]) -> Iterator[dict]:
    """The envelopes of a client stream's body as they arrive (``read(n)`` returns n bytes, or
    fewer at the body's end); ends at the body's end or an end-of-stream envelope."""
    while True:
        header = read(5)
        if not header:
            return
        if len(header) < 5:
            raise ValueError("the Connect envelope is truncated")
        flags, size = struct.unpack(">BI", header)
        if flags & 0x01:
            raise ValueError("compressed Connect messages are not supported")
        if size > MAX_MESSAGE:
            raise ValueError("the Connect message is too large")
        data = read(size) if size else b""
        if len(data) < size:
            raise ValueError("the Connect envelope is truncated")
        if flags & END_STREAM:
            return
        message = json.loads(data or b"{}")
        if not isinstance(message, dict):
            raise ValueError("the Connect message must be a JSON object")
        yield message


def timeout_seconds(header: str | None, default: float, most: float) -> float:
    """``Connect-Timeout-Ms`` as seconds, within (0, most]."""
    try:
        value = int(header) / 1000 if header else default
    except ValueError:
        value = default
    return min(max(value, 0.001), most)
