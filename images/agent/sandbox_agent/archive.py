"""``/workspace/archive``: the whole workspace as one tar stream, out (GET) and in (PUT).

The fleet copies a workspace that is not a folder on its own host (a pod's emptyDir, a cloud
sandbox's disk) to and from STORAGE_FOLDER this way. Only regular files and folders travel:
links, FIFOs, sockets and devices are left out both ways, as the host's own copies do
(sandbox_core/safecopy.py), and no name may leave the workspace. Both directions stream: nothing
is held whole in memory, which a memory-limited sandbox could not afford.
"""

from __future__ import annotations

import os
import stat
import tarfile

from .errors import bad_request
from .httpd import Handler, Request, Response, json_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

CHUNK = 1 << 20
#: Folders deeper than this are left out (as the host's copies do).
MAX_DEPTH = 100


def archive(root: str, request: Request) -> Response:
    """GET: the tar stream, sent on a connection of its own (its length is not known before)."""
    response = Response(200)
    response.hijack = lambda handler: _send_tar(handler, root)
    return response


def restore(root: str, request: Request) -> Response:
    """PUT: unpack a tar stream into the workspace (files replace files of the same name)."""
    try:
        with tarfile.open(fileobj=_Body(request.iter_body()), mode="r|") as tar:
            counts = _unpack(tar, os.path.realpath(root))
    except tarfile.TarError as exc:
        raise bad_request(f"not a tar stream: {exc}") from None
    return json_response(counts)


def _send_tar(handler: Handler, root: str) -> None:
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nConnection: close\r\n\r\n")
    handler.wfile.write(head.encode("latin-1"))
    with tarfile.open(fileobj=handler.wfile, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, name, st in _walk(root, "", 0):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = stat.S_IMODE(st.st_mode) & 0o777, int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue  # gone, or swapped for a link, since the walk saw it
            with os.fdopen(fd, "rb") as f:
                info.size = os.fstat(fd).st_size
                tar.addfile(info, f)
    handler.wfile.flush()


def _walk(folder: str, prefix: str, depth: int) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, name in the archive, stat) of every folder and regular file, links not followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        name = f"{prefix}{entry.name}"
        if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
            yield entry.path, name, st
            yield from _walk(entry.path, name + "/", depth + 1)
        elif stat.S_ISREG(st.st_mode):
            yield entry.path, name, st


def _unpack(tar: tarfile.TarFile, root: str) -> dict[str, int]:
    files = folders = skipped = 0
    for member in tar:
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        wanted = member.isfile() or member.isdir()
        if not parts or ".." in parts or len(parts) > MAX_DEPTH or not wanted:
            skipped += 1
            continue
        target = os.path.join(root, *parts)
        parent = os.path.dirname(target)
        where = os.path.realpath(target if member.isdir() else parent)
        if where != root and not where.startswith(root + os.sep):
            skipped += 1  # through a link the workspace holds: not followed out of it
            continue
        if member.isdir():
            os.makedirs(target, exist_ok=True)
            os.chmod(target, member.mode & 0o777 | 0o700)
            folders += 1
            continue
        os.makedirs(parent, exist_ok=True)
        source = tar.extractfile(member)
        if os.path.islink(target) or os.path.isdir(target):
            skipped += 1
            continue
        with open(target, "wb") as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
        os.chmod(target, member.mode & 0o777)
        os.utime(target, (member.mtime, member.mtime))
        files += 1
    return {"files": files, "folders": folders, "skipped": skipped}


class _Body:
    """A request body (an iterator of chunks) as the file tarfile's stream mode reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

