"""The ``/workspace/*`` routes: files confined to the workspace folder.

A path is taken relative to the workspace (or absolute, inside it). ``..`` and symlinks are resolved
before the check, so nothing outside the workspace can be read or changed through them: the parent
folder must resolve inside, and when the operation follows the last component (read, write, list,
exists, mkdir) so must the full path. Remove and move act on a symlink itself, never its target.
Shapes and statuses follow upstream's ``routers/workspace.py``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat

from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any, BinaryIO


class Workspace:
    def __init__(self, root: str) -> None:
        self.configured = os.path.abspath(root)
        self.root = os.path.realpath(root)

    # ---- confinement -----------------------------------------------------------------------------
    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip(os.sep) + os.sep)

    def _denied(self) -> HTTPError:
        return HTTPError(403, f"Permission error. Access restricted to {self.configured} directory.")

    def resolve(self, path: str | None, follow: bool = True) -> str:
        """The real path to act on, or 403 when ``path`` leads outside the workspace."""
        if path is None or path == "":
            raise bad_request("path is required")
        if "\x00" in path:
            raise bad_request("path contains a NUL byte")
        if os.path.isabs(path):
            lexical = os.path.normpath(path)
            for base in {self.configured, self.root}:
                if lexical == base or lexical.startswith(base.rstrip(os.sep) + os.sep):
                    lexical = self.root + lexical[len(base):]
                    break
            else:
                raise self._denied()
        else:
            lexical = os.path.normpath(os.path.join(self.root, path))
        if lexical == self.root:
            return self.root
        parent = os.path.realpath(os.path.dirname(lexical))
        if not self._inside(parent):
            raise self._denied()
        target = os.path.join(parent, os.path.basename(lexical))
        if follow and not self._inside(os.path.realpath(target)):
            raise self._denied()
        return target

    # ---- entries ---------------------------------------------------------------------------------
    def entry(self, full: str) -> dict[str, Any]:
        st = os.lstat(full)
        if os.path.islink(full) and not self._inside(os.path.realpath(full)):
            kind = "symlink"  # never describe what lies outside
        elif os.path.isdir(full):
            kind = "dir"
        elif os.path.isfile(full):
            kind = "file"
        elif os.path.islink(full):
            kind = "symlink"
        else:
            kind = "other"
        if kind == "file":
            st = os.stat(full)
        return {
            "path": full,
            "name": os.path.basename(full.rstrip(os.sep)),
            "type": kind,
            "size": st.st_size if kind == "file" else None,
            "mtime_ms": int(st.st_mtime * 1000),
        }

    # ---- operations ------------------------------------------------------------------------------
    def open_file(self, path: str | None):
        full = self.resolve(path)
        if not os.path.exists(full) or os.path.isdir(full):
            raise HTTPError(404, "not found")
        f = open(full, "rb")  # noqa: SIM115 (closed by the response once streamed)
        return f, os.fstat(f.fileno()).st_size

    def write_file(self, path: str | None, chunks: Iterable[bytes]) -> dict[str, Any]:
        full = self.resolve(path)
        if full == self.root or os.path.isdir(full):
            raise HTTPError(409, "path exists and is a directory")
        os.makedirs(os.path.dirname(full), exist_ok=True)
        full = self.resolve(path)  # the folders just made may not have changed where it leads
        try:
            with open(full, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(full)
            raise
        return self.entry(full)

    @contextlib.contextmanager
    def spooling(self) -> Iterator[Callable[[], BinaryIO]]:
        """``spool()`` makes a hidden file in the workspace root for an upload to stream into; those
        not moved into place by :meth:`write_many` are removed on exit. Not /tmp: there it could be
        memory (a tmpfs), and the workspace is on the filesystem its files go to, so they move."""
        spooled: list[BinaryIO] = []

        def spool() -> BinaryIO:
            path = os.path.join(self.root, f".upload-{os.urandom(8).hex()}.part")
            f = open(path, "xb")  # noqa: SIM115 (closed on exit)
            spooled.append(f)
            return f

        try:
            yield spool
        finally:
            for f in spooled:
                f.close()
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f.name)

    def write_many(self, items: list[tuple[str, BinaryIO]]) -> list[dict[str, Any]]:
        """``items`` is ``[(path, spooled file), ...]``; every path is checked before any file is placed."""
        for path, _ in items:
            full = self.resolve(path)
            if full == self.root or os.path.isdir(full):
                raise HTTPError(409, f"target exists and is a directory: {path}")
        entries = []
        for path, f in items:
            f.close()
            full = self.resolve(path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            full = self.resolve(path)  # the folders just made may not have changed where it leads
            _place(f.name, os.path.realpath(full))  # through a symlink to its target, as open() writes
            entries.append(self.entry(full))
        return entries

    def list_dir(self, path: str | None, depth: int) -> list[dict[str, Any]]:
        full = self.resolve(path)
        if not os.path.isdir(full):
            raise HTTPError(404, "not found")
        entries: list[dict[str, Any]] = []

        def walk(folder: str, level: int) -> None:
            try:
                with os.scandir(folder) as it:
                    items = sorted(it, key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return
            for item in items:
                try:
                    entries.append(self.entry(item.path))
                except FileNotFoundError:
                    continue
                if item.is_dir(follow_symlinks=False) and level < depth:
                    walk(item.path, level + 1)

        walk(full, 1)
        return entries

    def exists(self, path: str | None) -> bool:
        return os.path.exists(self.resolve(path))

    def remove(self, path: str | None) -> None:
        full = self.resolve(path, follow=False)
        if full == self.root:
            raise bad_request("refusing to remove the workspace root")
        if not os.path.lexists(full):
            return
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)

    def move(self, source: Any, destination: Any) -> dict[str, Any]:
        if not source or not destination or not isinstance(source, str) or not isinstance(destination, str):
            raise bad_request("source and destination are required")
        src = self.resolve(source, follow=False)
        dst = self.resolve(destination, follow=False)
        if self.root in (src, dst):
            raise bad_request("refusing to move the workspace root")
        if not os.path.lexists(src):
            raise HTTPError(404, "source not found")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        dst = self.resolve(destination, follow=False)
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # another mount inside the workspace
                raise
            shutil.move(src, dst)
        return self.entry(dst)

    def mkdir(self, path: Any) -> bool:
        if not path or not isinstance(path, str):
            raise bad_request("path is required")
        full = self.resolve(path)
        if os.path.exists(full):
            if not os.path.isdir(full):
                raise HTTPError(409, "path exists and is not a directory")
            return False
        os.makedirs(full, exist_ok=True)
        return True


def _place(spooled: str, target: str) -> None:
    """Move an uploaded file over ``target``, which keeps its mode and owner if it existed."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                os.chown(spooled, st.st_uid, st.st_gid)
            os.chmod(spooled, stat.S_IMODE(st.st_mode))
    try:
        os.replace(spooled, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # the target is on another mount inside the workspace
            raise
        shutil.copyfile(spooled, target)
        os.remove(spooled)
