"""Workspaces that are not a folder on the worker's host: a pod's emptyDir (K8S_WORKSPACE=emptydir),
a cloud sandbox's own disk.

They go to and from STORAGE_FOLDER (or OSS) through the sandbox's agent as one tar stream
(``/workspace/archive``), by way of a scratch folder on the worker's host, so that the one storage
code (sandbox_workers/storage.py: safe copies, links never followed) does the rest, as for a host
folder. The stream comes from the sandbox, so it is untrusted: only regular files and folders are
written, each name opened below the scratch folder without following anything
(sandbox_core.safecopy), and no more than ``MAX_BYTES`` are taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Iterator

import urllib3

from sandbox_core import safecopy
from sandbox_core.errors import SandboxError, Unavailable
from sandbox_core.safecopy import Report

from . import rebuild
from .context import WorkerContext

log = logging.getLogger(__name__)

#: Longest a workspace transfer may take, either way.
TRANSFER_TIMEOUT = 600
#: Most bytes of files taken from a sandbox's archive (its workspace quota is 10 GiB by default).
MAX_BYTES = 64 << 30


def save(ctx: WorkerContext, record: dict, target: str) -> Report:
    """Copy the sandbox's workspace to ``target`` in storage (before its container goes)."""
    with _scratch(ctx) as folder:
        report = _unpack_from_agent(ctx, record, folder)
        stored = ctx.storage.upload_folder(folder, target)
    stored.skipped.update(report.skipped)
    return stored


def fill(ctx: WorkerContext, record: dict, source: str) -> Report:
    """Fill the sandbox's (running) workspace with what storage keeps at ``source``."""
    with _scratch(ctx) as folder:
        report = ctx.storage.download_folder(source, folder)
        if os.listdir(folder):
            _pack_to_agent(ctx, record, folder)
    return report


@contextlib.contextmanager
def _scratch(ctx: WorkerContext) -> Iterator[str]:
    parent = rebuild.markers_dir(ctx.settings)
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".transfer-", dir=parent)  # 0700
    try:
        yield folder
    finally:
        safecopy.remove_tree(folder)


def _unpack_from_agent(ctx: WorkerContext, record: dict, folder: str) -> Report:
    report, taken = Report(), 0
    deadline = time.monotonic() + TRANSFER_TIMEOUT
    response = ctx.agent.open(record, "GET", "/workspace/archive", timeout=TRANSFER_TIMEOUT)
    top = safecopy.open_dir(folder)
    try:
        if response.status != 200:
            raise Unavailable(f"sandbox {record['container_name']}: its workspace archive "
                              f"answered HTTP {response.status}")
        with tarfile.open(fileobj=response, mode="r|") as tar:
            for member in tar:
                if time.monotonic() > deadline:
                    raise Unavailable(f"sandbox {record['container_name']}: its workspace took "
                                      f"longer than {TRANSFER_TIMEOUT}s to copy")
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if not parts or ".." in parts or not (member.isfile() or member.isdir()):
                    report.skip("not a file or folder")
                    continue
                if member.isfile() and taken + member.size > MAX_BYTES:
                    report.skip("too large")
                    continue
                _write(top, parts, member, tar, report)
                taken += member.size if member.isfile() else 0
    except (tarfile.TarError, safecopy.UnsafePath, OSError, urllib3.exceptions.HTTPError) as e:
        raise SandboxError(f"sandbox {record['container_name']}: its workspace archive could "
                           f"not be read: {e}") from e
    finally:
        os.close(top)
        response.release_conn()
    return report


def _write(top: int, parts: list[str], member: tarfile.TarInfo, tar: tarfile.TarFile,
           report: Report) -> None:
    where = parts if member.isdir() else parts[:-1]
    fd = safecopy.open_below(top, where, create=True, replace=True)
    try:
        if member.isdir():
            return
        safecopy.write_file(fd, parts[-1], safecopy.copy_stream(tar.extractfile(member)))
        written = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        try:  # its permission bits (never set-id), as the host's own copies keep them
            os.fchmod(written, member.mode & 0o777)
        finally:
            os.close(written)
        report.files += 1
    finally:
        os.close(fd)


def _pack_to_agent(ctx: WorkerContext, record: dict, folder: str) -> None:
    """Tar the scratch folder (a file of its own, so the upload has a length) and send it."""
    with tempfile.TemporaryFile(dir=os.path.dirname(folder)) as archive:
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(folder, arcname=".", recursive=True)  # only what storage wrote: files, folders
        archive.seek(0)
        response = ctx.agent.request(record, "PUT", "/workspace/archive", body=archive,
                                     headers={"Content-Type": "application/x-tar",
                                              "Content-Length": str(os.fstat(archive.fileno()).st_size)},
                                     timeout=TRANSFER_TIMEOUT)
    if response.status != 200:
        raise Unavailable(f"sandbox {record['container_name']}: its workspace could not be "
                          f"filled: HTTP {response.status} {response.body[:200]!r}")
