"""File trees a sandbox wrote, handled by the host (as root) without ever following a link.

A sandbox controls every name inside its /workspace, and so everything a copy of it put in
STORAGE_FOLDER. Whatever the host does with such a tree (copying it to or from storage, removing
it, chmod-ing its top) goes through directory file descriptors: each name is opened relative to its
parent's descriptor with O_NOFOLLOW, so a link (symbolic, or planted between a check and a use)
is never followed on either side. Only regular files and directories are copied; links, FIFOs,
sockets and device nodes are skipped and counted. A file is written to a new temporary name and
renamed over the old one, so a destination name that is a link or a hard link to some other file
is replaced, never written through. Nothing blocks on a FIFO (O_NONBLOCK, and FIFOs are never
read).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BadRequest

#: Directories deeper than this below a tree's top are not copied (and counted as skipped): each
#: level holds two descriptors while a copy walks it.
MAX_DEPTH = 100
CHUNK = 1 << 20

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: What opening a name that is not a directory with _DIR fails with (a link: ELOOP).
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


class UnsafePath(BadRequest):
    """A path the host was asked to use leads through a link or a non-directory."""


@dataclass
class Report:
    """What a copy did: files written and, by kind, the entries it left out."""

    files: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, kind: str) -> None:
        self.skipped[kind] += 1

    def describe(self) -> str:
        total = sum(self.skipped.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
        return f"{self.files} files, {total} skipped" + (f" ({kinds})" if kinds else "")


@dataclass(frozen=True)
class Entry:
    """One step of a walk: ``enter``/``leave`` a directory, or a regular ``file`` open at ``fd``."""

    kind: str
    parts: tuple[str, ...]
    st: os.stat_result
    fd: int = -1


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


def kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISLNK, "link"), (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device")):
        if test(mode):
            return kind
    return "other"


# -- opening directories --------------------------------------------------------------------


def open_dir(path: str, *, create: bool = False) -> int:
    """A descriptor of the directory at ``path`` (created if asked). The folders above it are the
    host's own; the last name, which a sandbox's tree may share, must not be a link."""
    parent, name = os.path.split(os.path.abspath(path))
    if create:
        os.makedirs(parent, exist_ok=True)
    parent_fd = os.open(parent, _DIR & ~os.O_NOFOLLOW)
    try:
        if not name:  # "/"
            return os.dup(parent_fd)
        return child_dir(parent_fd, name, create=create)
    except UnsafePath as e:
        raise UnsafePath(f"{path} is a link or not a directory; refusing to use it") from e
    finally:
        os.close(parent_fd)


def ensure_dir(path: str, mode: int | None = None) -> None:
    """Create the directory ``path`` if missing, refusing a link there; chmod it if ``mode``."""
    fd = open_dir(path, create=True)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def open_below(top_fd: int, parts: tuple[str, ...] | list[str], *, create: bool = False,
               replace: bool = False) -> int:
    """The directory ``top/parts...``, each name opened without following it. With ``create``,
    missing ones are made; with ``replace``, a link or file in the way is removed first.
    FileNotFoundError if one is missing, UnsafePath if one is a link and not to be replaced."""
    fd = os.dup(top_fd)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise UnsafePath(f"invalid path component {part!r}")
            child = child_dir(fd, part, create=create, replace=replace)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def child_dir(parent_fd: int, name: str, *, create: bool = False, replace: bool = False) -> int:
    """Open the directory ``name`` inside ``parent_fd`` without following a link."""
    try:
        return os.open(name, _DIR, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        if e.errno not in _NOT_A_DIR:
            raise
        if not replace:
            raise UnsafePath(f"{name} is a link or not a directory") from e
        _unlink(parent_fd, name)  # a link or a file where a directory goes: the link itself goes
    with suppress(FileExistsError):  # made by a concurrent copy: fine, still opened O_NOFOLLOW
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    try:
        return os.open(name, _DIR, dir_fd=parent_fd)
    except OSError as e:
        if e.errno in _NOT_A_DIR:
            raise UnsafePath(f"{name} was replaced by a link or a file while it was created") from e
        raise


# -- walking and copying ---------------------------------------------------------------------


def walk(top_fd: int, report: Report, parts: tuple[str, ...] = ()) -> Iterator[Entry]:
    """The directories and regular files below ``top_fd``, depth first, links never followed.
    A file's ``fd`` is open (non-blocking) only until the walk goes on; the rest is skipped."""
    for name in sorted(os.listdir(top_fd)):
        try:
            st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        path = (*parts, name)
        if stat.S_ISDIR(st.st_mode):
            if len(path) > MAX_DEPTH:
                report.skip("too deep")
                continue
            try:
                fd = os.open(name, _DIR, dir_fd=top_fd)
            except OSError as e:
                if e.errno not in _NOT_A_DIR:
                    raise
                report.skip("link")  # swapped for a link since the stat
                continue
            try:
                yield Entry("enter", path, st)
                yield from walk(fd, report, path)
                yield Entry("leave", path, os.fstat(fd))
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(name, _FILE, dir_fd=top_fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENXIO):
                    raise
                report.skip("link" if e.errno == errno.ELOOP else "socket")
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device since the stat
                    report.skip(kind_of(st.st_mode))
                    continue
                report.files += 1
                yield Entry("file", path, st, fd)
            finally:
                os.close(fd)
        else:
            report.skip(kind_of(st.st_mode))


def copy_tree(src_fd: int, dst_fd: int, report: Report | None = None) -> Report:
    """Merge the tree below ``src_fd`` into the one below ``dst_fd`` (files there are replaced,
    others kept, as ``copytree(dirs_exist_ok=True)`` does), never following a link on either side."""
    report = report if report is not None else Report()
    stack = [dst_fd]
    try:
        for entry in walk(src_fd, report):
            if entry.kind == "enter":
                stack.append(child_dir(stack[-1], entry.parts[-1], create=True, replace=True))
            elif entry.kind == "leave":
                fd = stack.pop()
                try:
                    _copy_meta(fd, entry.st, dir_mode=True)
                finally:
                    os.close(fd)
            else:
                write_file(stack[-1], entry.parts[-1], lambda out, e=entry: _copy_fd(e.fd, out),
                           entry.st)
    finally:
        for fd in stack[1:]:
            os.close(fd)
    return report


def write_file(dir_fd: int, name: str, fill: Callable[[int], None],
               st: os.stat_result | None = None) -> None:
    """Write a file ``name`` in ``dir_fd``: ``fill`` writes a new temporary file, which then
    replaces whatever had the name (a file, a link, a tree), so nothing is written through."""
    temp = f".safecopy-{secrets.token_hex(8)}.tmp"
    out = os.open(temp, _NEW, 0o600, dir_fd=dir_fd)
    try:
        try:
            fill(out)
            _copy_meta(out, st, dir_mode=False)
        finally:
            os.close(out)
        try:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as e:
            if e.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise
            remove_at(dir_fd, name)  # a directory where the file goes
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def copy_stream(reader: Readable) -> Callable[[int], None]:
    """A ``fill`` for write_file that copies a readable object (an OSS object, say)."""
    def fill(out: int) -> None:
        while chunk := reader.read(CHUNK):
            _write_all(out, chunk)
    return fill


def _copy_fd(src: int, out: int) -> None:
    offset = 0
    try:
        while sent := os.sendfile(out, src, offset, CHUNK):
            offset += sent
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        os.lseek(src, offset, os.SEEK_SET)
        os.lseek(out, offset, os.SEEK_SET)
        while chunk := os.read(src, CHUNK):
            _write_all(out, chunk)


def _write_all(out: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(out, view):]


def _copy_meta(fd: int, st: os.stat_result | None, *, dir_mode: bool) -> None:
    """Permission bits and times, never set-user/group-id: a sandbox's file must not become a
    set-id program of root on the host."""
    if st is None:
        os.fchmod(fd, 0o644)
        return
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & (0o1777 if dir_mode else 0o777))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


# -- removing --------------------------------------------------------------------------------


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it without following a link; a link at ``path``
    itself is removed, not its target. A missing path is fine."""
    parent, name = os.path.split(os.path.abspath(path))
    parent_fd = os.open(parent, _DIR & ~os.O_NOFOLLOW)
    try:
        remove_at(parent_fd, name)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent_fd)


def remove_at(parent_fd: int, name: str) -> None:
    """Remove the entry ``name`` of ``parent_fd``, a whole tree if it is a directory. Any depth:
    a directory deeper than MAX_DEPTH is moved up to the top first, so descriptors stay few."""
    top = _open_or_unlink(parent_fd, name)
    if top is None:
        return
    # (descriptor, its name in the one above, its subdirectories left to remove)
    stack: list[tuple[int, str, list[str]]] = [(top, name, [])]
    try:
        stack[0][2].extend(_clear_files(top))
        while stack:
            fd, fd_name, subdirs = stack[-1]
            if not subdirs:
                stack.pop()
                os.close(fd)
                if stack:
                    _rmdir(stack[-1][0], fd_name)
                continue
            sub = subdirs.pop()
            if len(stack) >= MAX_DEPTH:
                moved = f".safecopy-{secrets.token_hex(8)}.rm"
                os.rename(sub, moved, src_dir_fd=fd, dst_dir_fd=top)
                stack[0][2].append(moved)
                continue
            child = _open_or_unlink(fd, sub)
            if child is not None:
                stack.append((child, sub, _clear_files(child)))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    _rmdir(parent_fd, name)


def _open_or_unlink(parent_fd: int, name: str) -> int | None:
    """The directory ``name`` opened, or, if it is anything else (a link), unlinked: None."""
    try:
        return os.open(name, _DIR, dir_fd=parent_fd)
    except OSError as e:
        if e.errno not in _NOT_A_DIR:
            raise
    _unlink(parent_fd, name)
    return None


def _clear_files(fd: int) -> list[str]:
    """Unlink every non-directory in ``fd``; return the names of its subdirectories."""
    subdirs = []
    for name in os.listdir(fd):
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(name)
        else:
            _unlink(fd, name)
    return subdirs


def _unlink(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _rmdir(dir_fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=dir_fd)
