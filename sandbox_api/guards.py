"""Request-level guards every route gets: the body size cap, also for chunked bodies, and JSON
bodies that are valid Unicode.

werkzeug checks ``MAX_CONTENT_LENGTH`` against a Content-Length up front, but a chunked body has
none: it only stops reading at the limit and hands the view a silently truncated body. So a
chunked body is read through :class:`CapBody`'s counter instead, which answers 413 as soon as
one byte too many arrives (and never holds more than the limit). JSON text may escape lone
UTF-16 surrogates (``"\\ud800"``), which Python decodes into a ``str`` nothing can encode later
(Redis, logs): :class:`StrictJSON` refuses them with 400 at parse time.
"""

from __future__ import annotations

import re
from typing import Any

import flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from sandbox_core.settings import Settings

MiB = 1024 * 1024
CHUNK = 64 * 1024
#: A surrogate can only come from a ``\\uD800``-``\\uDFFF`` escape, or from bytes json decodes
#: with "surrogatepass" (CESU-8); bodies with neither skip the walk over their strings.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_MAY_HOLD_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def too_large(settings: Settings) -> str:
    return f"request body larger than FLEET_MAX_BODY_MB ({settings.FLEET_MAX_BODY_MB} MiB)"


class Request(flask.Request):
    @property
    def max_content_length(self) -> int | None:
        # A chunked body has no length to check up front; CapBody counts it while it is read.
        # (werkzeug's own cap would truncate it at the limit without a word.)
        if self.content_length is None:
            return None
        return super().max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value


class CapBody:
    """WSGI middleware: ``wsgi.input`` gives at most FLEET_MAX_BODY_MB, then raises 413."""

    def __init__(self, app, settings: Settings) -> None:
        self.app = app
        self.limit = settings.FLEET_MAX_BODY_MB * MiB
        self.detail = too_large(settings)

    def __call__(self, environ: dict, start_response):
        if "wsgi.input" in environ:
            environ["wsgi.input"] = _CappedInput(environ["wsgi.input"], self.limit, self.detail)
        return self.app(environ, start_response)


class _CappedInput:
    def __init__(self, stream, limit: int, detail: str) -> None:
        self._stream = stream
        self._left = limit + 1  # one byte past the limit tells a body that is too large
        self._detail = detail

    def _count(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left <= 0:
            raise RequestEntityTooLarge(self._detail)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while part := self.read(CHUNK):
                parts.append(part)
            return b"".join(parts)
        return self._count(self._stream.read(min(size, self._left)))

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        return self._count(self._stream.readline(limit))

    def __iter__(self):
        while line := self.readline():
            yield line


class StrictJSON(DefaultJSONProvider):
    """Flask's JSON, refusing text that is not valid Unicode (lone surrogates) with 400."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        data = super().loads(s, **kwargs)
        pattern = _MAY_HOLD_SURROGATE if isinstance(s, (bytes, bytearray)) else _MAY_HOLD_SURROGATE_TEXT
        if pattern.search(s):
            _check_text(data)
        return data


def _check_text(data: Any) -> None:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("the JSON body holds a lone UTF-16 surrogate (such as \\ud800): "
                                 "strings must be valid Unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
