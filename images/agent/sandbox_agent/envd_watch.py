"""E2B envd's directory watchers, on inotify (through ctypes: the stdlib has no binding).

A watcher is an event log of envd ``FilesystemEvent``s (``{name, type}``, ``name`` relative to the
watched folder) filled by one thread that blocks in select() on its own inotify descriptor until
the kernel has events or the watcher is removed (a pipe wakes it): nothing polls the file system.
A WatchDir stream follows the log by cursor, as process output is followed; the unary variant
(CreateWatcher / GetWatcherEvents / RemoveWatcher) takes what came since its last call.
Kinds of event as envd reports them (Go's fsnotify): create, write, remove, rename, chmod.
Imported on a sandbox's first watcher only, so an agent nobody watches through loads no ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import struct
import threading
import time
import uuid

from .envd_fs import resolve
from .envd_process import EventLog
from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_IGNORED, IN_ISDIR = 0x100, 0x200, 0x8000, 0x40000000
IN_CLOEXEC = os.O_CLOEXEC
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
#: inotify flag -> envd's EventType (fsnotify's mapping: a move into the folder is a create).
KINDS = ((IN_CREATE | IN_MOVED_TO, "EVENT_TYPE_CREATE"), (IN_MODIFY, "EVENT_TYPE_WRITE"),
         (IN_DELETE, "EVENT_TYPE_REMOVE"), (IN_MOVED_FROM, "EVENT_TYPE_RENAME"),
         (IN_ATTRIB, "EVENT_TYPE_CHMOD"))
HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
MAX_WATCHERS = 64
#: A unary watcher nobody asked for events this long is removed (its client went away).
UNREAD_LIMIT = 600.0

_libc: Any = None


def _inotify() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        _libc = libc
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class Watcher(EventLog):
    """One watched folder (and, ``recursive``, every folder below it)."""

    def __init__(self, root: str, recursive: bool) -> None:
        super().__init__()
        self.id = uuid.uuid4().hex
        self.root = root
        self.recursive = recursive
        self.taken = 0  # the unary variant's cursor
        self.read_at = time.monotonic()
        self._dirs: dict[int, str] = {}  # watch descriptor -> folder, relative to root
        self._fd = _check(_inotify().inotify_init1(IN_CLOEXEC), "inotify_init1")
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = False
        try:
            self._add("")
            if recursive:
                for folder, subdirs, _ in os.walk(root):
                    for sub in subdirs:
                        self._add(os.path.relpath(os.path.join(folder, sub), root))
        except BaseException:
            self._close_fds()
            raise
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"envd-watch-{self.id[:8]}")
        self._thread.start()

    def _add(self, relative: str) -> None:
        path = os.path.join(self.root, relative) if relative else self.root
        try:
            wd = _check(_inotify().inotify_add_watch(self._fd, os.fsencode(path), MASK),
                        f"cannot watch {path}")
        except OSError:
            if not relative:
                raise
            return  # a subfolder that went away meanwhile
        self._dirs[wd] = relative

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fd for key, _ in sel.select()}
                if self._wake_r in ready:
                    break
                self._handle(os.read(self._fd, 65536))
        self._close_fds()
        self.finish({})

    def _handle(self, data: bytes) -> None:
        offset = 0
        while offset + HEADER.size <= len(data):
            wd, mask, _cookie, size = HEADER.unpack_from(data, offset)
            name = os.fsdecode(data[offset + HEADER.size:offset + HEADER.size + size].rstrip(b"\0"))
            offset += HEADER.size + size
            folder = self._dirs.get(wd)
            if mask & IN_IGNORED:
                self._dirs.pop(wd, None)
            if folder is None or not name:
                continue  # events about a watched folder itself come from its parent too
            relative = os.path.join(folder, name) if folder else name
            for flag, kind in KINDS:
                if mask & flag:
                    self.add({"name": relative, "type": kind}, len(relative) + 32)
            if self.recursive and mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self._add(relative)

    def stop(self) -> None:
        """Wake the thread, which closes the descriptors and ends the log. Once only: a closed
        descriptor's number may be reused."""
        if not self._stopped:
            self._stopped = True
            os.write(self._wake_w, b"x")

    def _close_fds(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Watchers:
    def __init__(self) -> None:
        self._watchers: dict[str, Watcher] = {}
        self._lock = threading.Lock()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateWatcher / WatchDir's start: ``{path, recursive}`` -> ``{watcherId}``."""
        path = resolve(body.get("path"))
        if not os.path.exists(path):
            raise HTTPError(404, f"path {path} does not exist")
        if not os.path.isdir(path):
            raise bad_request(f"path {path} is not a directory")
        with self._lock:
            self._forget_unread()
            if len(self._watchers) >= MAX_WATCHERS:
                raise HTTPError(429, f"this sandbox already has {MAX_WATCHERS} watchers; "
                                     "remove one first")
        watcher = Watcher(path, bool(body.get("recursive")))  # a deep tree takes a while to walk
        with self._lock:
            self._watchers[watcher.id] = watcher
        return {"watcherId": watcher.id}

    def find(self, body: dict[str, Any]) -> Watcher:
        watcher_id = body.get("watcherId")
        if not isinstance(watcher_id, str) or not watcher_id:
            raise bad_request("watcherId is required")
        with self._lock:
            watcher = self._watchers.get(watcher_id)
        if watcher is None:
            raise HTTPError(404, f"watcher {watcher_id} not found")
        watcher.read_at = time.monotonic()
        return watcher

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        """A stream's read: events from ``cursor`` on, waiting up to ``wait`` s for one."""
        wait = min(max(float(body.get("wait") or 0), 0.0), 30.0)
        got = self.find(body).read(int(body.get("cursor") or 0), wait)
        return {**got, "events": [{"filesystem": e} for e in got["events"]]}

    def take(self, body: dict[str, Any]) -> dict[str, Any]:
        """GetWatcherEvents: what came since the last call."""
        watcher = self.find(body)
        got = watcher.read(watcher.taken, 0)
        watcher.taken = got["cursor"]
        return {"events": got["events"]}

    def remove(self, body: dict[str, Any]) -> dict[str, Any]:
        watcher = self.find(body)
        with self._lock:
            self._watchers.pop(watcher.id, None)
        watcher.stop()
        return {}

    def _forget_unread(self) -> None:
        now = time.monotonic()
        for watcher_id, watcher in list(self._watchers.items()):
            if now - watcher.read_at > UNREAD_LIMIT:
                del self._watchers[watcher_id]
                watcher.stop()

    def close(self) -> None:
        with self._lock:
            watchers, self._watchers = list(self._watchers.values()), {}
        for watcher in watchers:
            watcher.stop()
