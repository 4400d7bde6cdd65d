"""Where workspaces are kept between sandboxes: STORAGE_FOLDER on this host, or an OSS bucket.

As upstream: a sandbox whose record has a ``storage_path`` starts with that folder's files in its
/workspace, and its /workspace is copied back there when it is released or recycled. Only regular
files and directories travel, through sandbox_core.safecopy (links are never followed or stored).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import Protocol

from sandbox_core import safecopy
from sandbox_core.errors import SettingsError
from sandbox_core.safecopy import Report
from sandbox_core.settings import Settings


class Storage(Protocol):
    def download_folder(self, source: str, destination: str) -> Report: ...

    def upload_folder(self, source: str, destination: str) -> Report: ...


class LocalStorage:
    """STORAGE_FOLDER on this host. Both sides are walked by safecopy, links never followed, and
    the storage path is opened name by name below STORAGE_FOLDER, so nothing outside it is read
    into a workspace or written from one, whatever links a sandbox left in either."""

    def __init__(self, root: str) -> None:
        self.given = os.path.abspath(root)
        self.root = os.path.realpath(root)  # the operator's folder may itself be a link

    def download_folder(self, source: str, destination: str) -> Report:
        try:
            src = self._open(source, create=False)
        except FileNotFoundError:
            return Report()  # nothing kept there yet
        return _copy_and_close(src, lambda: safecopy.open_dir(destination, create=True))

    def upload_folder(self, source: str, destination: str) -> Report:
        return _copy_and_close(safecopy.open_dir(source), lambda: self._open(destination, create=True))

    def _open(self, path: str, *, create: bool) -> int:
        """The storage folder ``path`` below STORAGE_FOLDER. Creating it, a link in the way is
        replaced (it is storage's own); reading, it is refused."""
        parts = self._parts(path)
        top = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return safecopy.open_below(top, parts, create=create, replace=create)
        except safecopy.UnsafePath as e:
            raise SettingsError(f"storage path {path} leads through a link ({e})") from e
        finally:
            os.close(top)

    def _parts(self, path: str) -> tuple[str, ...]:
        path = os.path.normpath(os.path.abspath(path))
        for root in (self.given, self.root):
            if path == root:
                return ()
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return tuple(os.path.relpath(path, root).split(os.sep))
        raise SettingsError(f"storage path {path} is outside STORAGE_FOLDER {self.root}")


def _copy_and_close(src: int, open_destination: Callable[[], int]) -> Report:
    try:
        dst = open_destination()
        try:
            return safecopy.copy_tree(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


class OSSStorage:
    """An Alibaba Cloud OSS bucket (oss2); folders are key prefixes. The workspace side goes
    through safecopy as for LocalStorage: only regular files are uploaded, and downloads are
    written name by name below the workspace, never through a link."""

    def __init__(self, settings: Settings, bucket=None) -> None:
        if bucket is None:
            try:
                import oss2
            except ImportError as e:
                raise SettingsError("FILE_SYSTEM=oss needs oss2: pip install 'sandbox-fleet[oss]'") from e
            bucket = oss2.Bucket(oss2.Auth(settings.OSS_ACCESS_KEY_ID, settings.OSS_ACCESS_KEY_SECRET),
                                 settings.OSS_ENDPOINT, settings.OSS_BUCKET_NAME)
        self.bucket = bucket

    def download_folder(self, source: str, destination: str) -> Report:
        report = Report()
        prefix = source.rstrip("/") + "/"
        top = safecopy.open_dir(destination, create=True)
        try:
            for key in self._keys(prefix):
                parts = key[len(prefix):].split("/")
                folder, name = parts[:-1], parts[-1]
                if any(p in ("", ".", "..") for p in folder) or name in (".", ".."):
                    report.skip("bad key")  # a key that would land outside its folder
                    continue
                fd = safecopy.open_below(top, folder, create=True, replace=True)
                try:
                    if name:  # "" is a folder marker: the folder is made, that is all
                        safecopy.write_file(fd, name, safecopy.copy_stream(self.bucket.get_object(key)))
                        report.files += 1
                finally:
                    os.close(fd)
        finally:
            os.close(top)
        return report

    def upload_folder(self, source: str, destination: str) -> Report:
        report = Report()
        top = safecopy.open_dir(source)
        try:
            for entry in safecopy.walk(top, report):
                if entry.kind == "file":
                    key = posixpath.join(destination.rstrip("/"), *entry.parts)
                    with open(entry.fd, "rb", closefd=False) as f:
                        self.bucket.put_object(key, f)
        finally:
            os.close(top)
        return report

    def _keys(self, prefix: str):
        marker = ""
        while True:
            page = self.bucket.list_objects(prefix=prefix, marker=marker, max_keys=1000)
            yield from (obj.key for obj in page.object_list)
            if not page.is_truncated:
                return
            marker = page.next_marker


def make_storage(settings: Settings) -> Storage | None:
    """The configured storage, or None without STORAGE_FOLDER (workspaces are not kept)."""
    if not settings.STORAGE_FOLDER:
        return None
    if settings.FILE_SYSTEM == "oss":
        return OSSStorage(settings)
    return LocalStorage(settings.STORAGE_FOLDER)
