"""A size limit on each sandbox's /workspace: a loop-mounted ext4 image per workspace.

The workspace folder ``<DEFAULT_MOUNT_DIR>/<id>`` becomes the mount point of a sparse image
``<DEFAULT_MOUNT_DIR>/.quota/<id>.img`` of the quota's size, so a sandbox that fills it gets
ENOSPC and the host's disk is untouched. Project quotas (XFS ``pquota``, ext4 ``prjquota``) would
need no image, but need a kernel and file system built for them (docs/backends.md says which).

The folder stays an ordinary path for everything else: the sandbox's bind mount, the copy to
STORAGE_FOLDER on release, a recycled session's restore (the mount is kept with the folder).
Teardown calls :meth:`WorkspaceQuota.release` before it deletes a workspace: unmount, delete the
image. :meth:`WorkspaceQuota.sweep` (at every reconcile of the host and at shutdown) does the same
for empty, unused ones a crash left. Images are sparse and mounted with ``discard``, so deleted files give
their blocks back to the host at once. After a host reboot a kept workspace's files are in its
image, which the next create of that workspace mounts again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

from sandbox_core.errors import BackendError, BadRequest

log = logging.getLogger(__name__)

QUOTA_DIR = ".quota"
#: Lazy inode tables and journal: a 10 GiB image takes ~4 MiB on disk and ~25 ms to make.
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E",
        "nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0"]
MOUNT_OPTIONS = "loop,discard,noinit_itable,nosuid,nodev"
#: The empty image each size's workspaces are copied from (in the images folder).
TEMPLATE_PREFIX = ".template-"
#: An empty ext4's data extents are a few MiB; a larger one means holes are not seen.
MAX_TEMPLATE_EXTENT = 64 << 20
COMMAND_TIMEOUT = 30
#: A sweep leaves images younger than this alone: one just mounted may not have its container yet.
SWEEP_AFTER = 300.0


class WorkspaceQuota:
    """Loop images for the workspaces directly under one folder (the fleet's DEFAULT_MOUNT_DIR)."""

    def __init__(self, mount_root: str) -> None:
        self.root = os.path.abspath(mount_root)
        self.images = os.path.join(self.root, QUOTA_DIR)
        self.unavailable = _why_unavailable()
        self._warned = False

    def applies_to(self, workspace: str) -> bool:
        """Only the fleet's own folders: one a client chose (ALLOW_MOUNT_DIR) is left as it is."""
        return os.path.dirname(os.path.abspath(workspace)) == self.root

    def prepare(self, workspace: str, size: int, name: str) -> bool:
        """Make ``workspace`` a mount of its own image of ``size`` bytes (kept if it already is).
        Returns False, having said why once, where this host cannot loop-mount."""
        if self.unavailable:
            if not self._warned:
                log.warning("sandbox %s: /workspace is not size-limited: %s", name, self.unavailable)
                self._warned = True
            return False
        workspace = os.path.abspath(workspace)
        image = self._image_of(workspace)
        with self._locked():
            if os.path.ismount(workspace):
                with contextlib.suppress(OSError):
                    os.utime(image)
                return True  # a recycled session's workspace, still mounted
            os.makedirs(workspace, exist_ok=True)
            new = not os.path.exists(image)
            if new:
                try:
                    self._make_image(image, size)
                except BackendError as e:  # e.g. a worker in a container may not mount
                    self.unavailable = f"this host cannot make a workspace image ({e.detail})"
                    return self.prepare(workspace, size, name)
                if os.listdir(workspace):  # files from its storage_path: into the image with them
                    self._move_into(workspace, image, name)
            os.utime(image)  # fresh: no sweep takes it before its container mounts it
            _run(["mount", "-o", MOUNT_OPTIONS, image, workspace], f"mount {image}")
            if new:
                # mkfs' lost+found would show in every /workspace (e2fsck makes one again if it
                # needs it); no container has the folder yet.
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(workspace, "lost+found"))
        log.info("sandbox %s: /workspace limited to %d MiB (%s)", name, size >> 20, image)
        return True

    def release(self, workspace: str, in_use: Callable[[str], bool]) -> None:
        """Unmount a workspace being deleted and delete its image (its files go with it)."""
        workspace = os.path.abspath(workspace)
        image = self._image_of(workspace)
        if self.unavailable or not os.path.exists(image):
            return
        with self._locked():
            self._drop(workspace, image, in_use, only_if_empty=False)

    def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Unmount and delete the images of workspaces left empty and unused (a teardown that
        was interrupted, a folder deleted by hand); returns how many."""
        if self.unavailable or not os.path.isdir(self.images):
            return 0
        swept = 0
        with self._locked():
            for entry in os.listdir(self.images):
                image = os.path.join(self.images, entry)
                if entry.endswith(".img") and _age(image) > SWEEP_AFTER:
                    workspace = os.path.join(self.root, entry[:-4])
                    swept += self._drop(workspace, image, in_use, only_if_empty=True)
        if swept:
            log.info("released %d unused workspace image(s) under %s", swept, self.images)
        return swept

    def _drop(self, workspace: str, image: str, in_use: Callable[[str], bool],
              only_if_empty: bool) -> bool:
        """Unmount the workspace, delete its image; False if it is still wanted (caller locks)."""
        if os.path.ismount(workspace):
            if (only_if_empty and os.listdir(workspace)) or in_use(workspace):
                return False
            try:
                _run(["umount", workspace], f"umount {workspace}")
            except BackendError as e:
                log.warning("workspace %s: %s", workspace, e.detail)
                return False
            if only_if_empty:
                with contextlib.suppress(OSError):
                    os.rmdir(workspace)
        elif only_if_empty and os.path.exists(workspace):
            return False  # not mounted (after a reboot): its files are in the image
        with contextlib.suppress(FileNotFoundError):
            os.remove(image)
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _image_of(self, workspace: str) -> str:
        return os.path.join(self.images, os.path.basename(workspace) + ".img")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One mount or sweep at a time across this host's worker processes and threads."""
        os.makedirs(self.images, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.images, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _make_image(self, image: str, size: int) -> None:
        """An empty ext4 image of ``size`` bytes: a copy of the few MiB of data of a template
        made once per size (~2 ms of I/O, where mkfs takes ~20 ms and a process), or mkfs where
        this file system cannot tell data from holes."""
        template = os.path.join(self.images, f"{TEMPLATE_PREFIX}{size}")  # no .img: never swept
        try:
            if not os.path.exists(template):
                _mkfs(template + ".new", size)
                os.replace(template + ".new", template)
            if not _copy_data(template, image):
                _mkfs(image, size)
        except BaseException:
            for path in (image, template + ".new"):
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise

    def _move_into(self, workspace: str, image: str, name: str) -> None:
        def copy(mnt: str) -> None:
            try:
                shutil.copytree(workspace, mnt, symlinks=True, dirs_exist_ok=True)
            except (OSError, shutil.Error) as e:
                raise BadRequest(f"sandbox {name}: its workspace files do not fit in the "
                                 f"/workspace quota ({e})") from None

        try:
            _mounted_do(image, copy)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(image)
            raise
        for entry in os.listdir(workspace):
            path = os.path.join(workspace, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def _mkfs(image: str, size: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    _run([*MKFS, image], f"mkfs.ext4 {image}")


def _copy_data(source: str, target: str) -> bool:
    """Copy ``source`` into a new sparse file ``target`` of its size, its data extents only;
    False (and no ``target``) if the file system reports an extent too large to be an empty
    ext4's (it cannot seek holes: the copy would write the whole image)."""
    size = os.path.getsize(source)
    extents, offset = [], 0
    with open(source, "rb") as src:
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            offset = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            extents.append((start, offset - start))
        if any(length > MAX_TEMPLATE_EXTENT for _, length in extents):
            return False
        with open(target, "xb") as dst:
            dst.truncate(size)
            for start, length in extents:
                while length > 0:
                    copied = os.copy_file_range(src.fileno(), dst.fileno(), length, start, start)
                    if copied == 0:
                        raise OSError(f"copying {source} to {target} stopped at {start}")
                    start, length = start + copied, length - copied
    return True


def _mounted_do(image: str, action: Callable[[str], None]) -> None:
    """Run ``action(mount_point)`` with the image mounted on a private staging folder."""
    staging = image[:-4] + ".staging"
    os.makedirs(staging, mode=0o700, exist_ok=True)
    _run(["mount", "-o", MOUNT_OPTIONS, image, staging], f"mount {image}")
    try:
        action(staging)
    finally:
        _run(["umount", staging], f"umount {staging}")
        os.rmdir(staging)


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def _run(argv: list[str], what: str) -> None:
    try:
        subprocess.run(argv, capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT)
    except subprocess.CalledProcessError as e:
        raise BackendError(f"{what} failed: {(e.stderr or e.stdout).strip()}") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackendError(f"{what} failed: {e}") from e


def _why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "loop-mounting a workspace image needs a worker running as root"
    missing = [tool for tool in ("mkfs.ext4", "mount", "umount") if not shutil.which(tool)]
    if missing:
        return f"{', '.join(missing)} not found on this host"
    if not os.path.exists("/dev/loop-control"):
        return "this host has no loop devices (/dev/loop-control)"
    return None
