"""A streaming ``multipart/form-data`` parser for ``POST /workspace/files:batch`` (``cgi`` is gone).

The body is parsed as it arrives: the data of each part the caller's ``spool`` takes goes to that
file chunk by chunk, so an upload of any size needs about one read chunk (1 MiB) of memory, never
the whole body. Parts the caller does not spool (short form fields such as ``paths``) are kept in
memory, at most :data:`MAX_FIELDS` bytes for all of them together.

The standard library only, and smaller than PyPI's ``multipart`` (which would also load ``typing``
and ``tempfile``); docs/images.md ("Uploads") has the figures.
"""

from __future__ import annotations

import re
from collections import namedtuple

from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import BinaryIO

_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')

MAX_HEADERS = 16 << 10  # the header block of one part
MAX_FIELDS = 1 << 20  # all parts kept in memory together

# One form field: name, filename (None for a plain field), content_type, and data: bytes, or the
# file the part was spooled into.
Part = namedtuple("Part", "name filename content_type data")


class _Discard:
    def write(self, data: memoryview) -> int:
        return len(data)


#: A ``spool`` answer for parts to read past: their data is dropped as it arrives.
DISCARD = _Discard()


def header_params(value: str) -> dict[str, str]:
    """``form-data; name="files"; filename="a.txt"`` -> ``{"name": "files", "filename": "a.txt"}``."""
    params = {}
    for key, raw in _PARAM.findall(value):
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return params


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("expected a multipart/form-data body")
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise bad_request("multipart body without a boundary")
    if len(boundary) > 200:
        raise bad_request("multipart boundary longer than 200 characters")
    return boundary.encode("latin-1", "replace")


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):  # the first is what followed the delimiter on its line
        key, colon, value = line.decode("utf-8", "replace").partition(":")
        if colon:
            headers[key.strip().lower()] = value.strip()
    return headers


def parse(chunks: Iterable[bytes], content_type: str,
          spool: Callable[[str, str | None, str | None], BinaryIO | None]) -> list[Part]:
    """The parts of a body that arrives as ``chunks``; 400 for a malformed one.

    ``spool(name, filename, content_type)`` is asked at the start of each part for a file to write
    its data to (returned as the part's ``data``), or None to keep the data in memory."""
    delimiter = b"\r\n--" + boundary_of(content_type)
    keep = len(delimiter) - 1  # a tail this long may be the start of a delimiter split across chunks
    buf = bytearray(b"\r\n")  # so that the first delimiter, at the very start, matches too
    parts: list[Part] = []
    in_memory = 0
    state = "preamble"
    sink: BinaryIO | bytearray | None = None
    header: tuple[str, str | None, str | None] = ("", None, None)
    chunks = iter(chunks)
    while True:
        if state == "preamble":
            at = buf.find(delimiter)
            if at >= 0:
                del buf[:at + len(delimiter)]
                state = "headers"
                continue
            del buf[:max(0, len(buf) - keep)]
        elif state == "headers":
            if buf[:2] == b"--":  # the closing delimiter
                for _ in chunks:  # the epilogue, read to its end so that the connection stays usable
                    pass
                return parts
            end = buf.find(b"\r\n\r\n")
            if 0 <= buf.find(delimiter) < (end if end >= 0 else len(buf)):
                raise bad_request("malformed multipart part")  # no blank line ends its headers
            if end >= 0:
                if end > MAX_HEADERS:
                    raise bad_request("multipart part headers too long")
                headers = _headers(bytes(buf[:end]))
                del buf[:end + 4]
                disposition = header_params(headers.get("content-disposition", ""))
                header = (disposition.get("name", ""), disposition.get("filename"),
                          headers.get("content-type"))
                sink = spool(*header)
                if sink is None:
                    sink = bytearray()
                state = "data"
                continue
            if len(buf) > MAX_HEADERS:
                raise bad_request("multipart part headers too long")
        else:  # data
            at = buf.find(delimiter)
            end = at if at >= 0 else max(0, len(buf) - keep)
            if end:
                with memoryview(buf) as view:  # released before buf is resized
                    in_memory = _write(sink, view[:end], in_memory)
                del buf[:end]
            if at >= 0:
                del buf[:len(delimiter)]
                data = bytes(sink) if isinstance(sink, bytearray) else sink
                parts.append(Part(*header, data))
                sink, state = None, "headers"
                continue
        chunk = next(chunks, None)
        if chunk is None:
            raise bad_request("multipart body without its closing boundary")
        buf += chunk


def _write(sink: BinaryIO | bytearray | None, data: memoryview, in_memory: int) -> int:
    """Append ``data`` to the part; returns how many bytes all in-memory parts now hold."""
    if isinstance(sink, bytearray):
        in_memory += len(data)
        if in_memory > MAX_FIELDS:
            raise HTTPError(413, f"multipart form fields (parts that are not files) over {MAX_FIELDS} bytes")
        sink += data
    elif sink is not None:
        sink.write(data)
    return in_memory
