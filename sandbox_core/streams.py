"""Keys of the streams a worker relays to an API process (E2B process output), shared by both."""

from __future__ import annotations

from .store import NS


def stream_key(stream_id: str) -> str:
    """The Redis list the worker pushes a stream's messages onto and the API blocks on."""
    return f"{NS}e2b:stream:{stream_id}"


def listen_key(stream_id: str) -> str:
    """Set (with a short TTL) while the API still listens; the worker stops relaying without it."""
    return f"{NS}e2b:listen:{stream_id}"
