"""A small ``multipart/form-data`` parser for ``POST /workspace/files:batch`` (the ``cgi`` module is gone)."""

from __future__ import annotations

import re
from collections import namedtuple

from .errors import bad_request

_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


# One form field: name, filename (None for a plain field), content_type, data (bytes).
Part = namedtuple("Part", "name filename content_type data")


def header_params(value: str) -> dict[str, str]:
    """``form-data; name="files"; filename="a.txt"`` -> ``{"name": "files", "filename": "a.txt"}``."""
    params = {}
    for key, raw in _PARAM.findall(value):
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return params


def parse(body: bytes, content_type: str) -> list[Part]:
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("expected a multipart/form-data body")
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise bad_request("multipart body without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise bad_request("malformed multipart part")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            key, colon, value = line.decode("utf-8", "replace").partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = header_params(headers.get("content-disposition", ""))
        parts.append(Part(disposition.get("name", ""), disposition.get("filename"),
                          headers.get("content-type"), data))
    raise bad_request("multipart body without its closing boundary")
