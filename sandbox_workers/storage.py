"""Where workspaces are kept between sandboxes: STORAGE_FOLDER on this host, or an OSS bucket.

As upstream: a sandbox whose record has a ``storage_path`` starts with that folder's files in its
/workspace, and its /workspace is copied back there when it is released or recycled.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
from typing import Protocol

from sandbox_core.errors import SettingsError
from sandbox_core.settings import Settings

log = logging.getLogger(__name__)


class Storage(Protocol):
    def download_folder(self, source: str, destination: str) -> None: ...

    def upload_folder(self, source: str, destination: str) -> None: ...


class LocalStorage:
    """STORAGE_FOLDER on this host. Every path is checked again here, links resolved, so nothing
    outside STORAGE_FOLDER is read into a workspace or written from one."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def download_folder(self, source: str, destination: str) -> None:
        if os.path.isdir(self._inside(source)):
            shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)

    def upload_folder(self, source: str, destination: str) -> None:
        os.makedirs(self._inside(destination), exist_ok=True)
        shutil.copytree(source, destination, symlinks=True, dirs_exist_ok=True)

    def _inside(self, path: str) -> str:
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise SettingsError(f"storage path {path} is outside STORAGE_FOLDER {self.root}")
        return real


class OSSStorage:
    """An Alibaba Cloud OSS bucket (oss2); folders are key prefixes."""

    def __init__(self, settings: Settings, bucket=None) -> None:
        if bucket is None:
            try:
                import oss2
            except ImportError as e:
                raise SettingsError("FILE_SYSTEM=oss needs oss2: pip install 'sandbox-fleet[oss]'") from e
            bucket = oss2.Bucket(oss2.Auth(settings.OSS_ACCESS_KEY_ID, settings.OSS_ACCESS_KEY_SECRET),
                                 settings.OSS_ENDPOINT, settings.OSS_BUCKET_NAME)
        self.bucket = bucket

    def download_folder(self, source: str, destination: str) -> None:
        prefix = source.rstrip("/") + "/"
        for key in self._keys(prefix):
            relative = key[len(prefix):]
            target = os.path.normpath(os.path.join(destination, relative))
            if not relative or not target.startswith(os.path.abspath(destination) + os.sep):
                continue  # a folder marker, or a key that would land outside the workspace
            if key.endswith("/"):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                self.bucket.get_object_to_file(key, target)

    def upload_folder(self, source: str, destination: str) -> None:
        for root, _dirs, files in os.walk(source):
            for name in files:
                path = os.path.join(root, name)
                if os.path.islink(path):
                    continue  # a link's target is not the sandbox's to upload
                key = posixpath.join(destination.rstrip("/"), os.path.relpath(path, source))
                self.bucket.put_object_from_file(key, path)

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
