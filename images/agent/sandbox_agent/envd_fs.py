"""E2B envd's filesystem service and its ``/files`` transfers, over the whole sandbox.

Unlike ``/workspace/*`` (agentscope's routes, confined to the workspace) an E2B client owns the
sandbox's file system, as envd gives it: relative paths start at the default user's home. Files
travel in ranges so that no side ever holds a whole large file.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import time

from .envd_process import HOME
from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

MAX_RANGE = 8 << 20
_TYPES = {stat.S_IFREG: "FILE_TYPE_FILE", stat.S_IFDIR: "FILE_TYPE_DIRECTORY",
          stat.S_IFLNK: "FILE_TYPE_SYMLINK"}


def resolve(path: Any) -> str:
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    if "\x00" in path:
        raise bad_request("path contains a NUL byte")
    return os.path.normpath(os.path.join(HOME, os.path.expanduser(path)))


def _name(table: Any, ident: int) -> str:
    try:
        return table(ident)[0]
    except KeyError:
        return str(ident)


def entry(path: str) -> dict[str, Any]:
    st = os.lstat(path)
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "FILE_TYPE_UNSPECIFIED")
    info: dict[str, Any] = {
        "name": os.path.basename(path.rstrip("/")) or "/", "type": kind, "path": path,
        "size": st.st_size, "mode": stat.S_IMODE(st.st_mode) | (0o20000000000 if kind ==
                                                                "FILE_TYPE_DIRECTORY" else 0),
        "permissions": stat.filemode(st.st_mode), "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "modifiedTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime))
        + f".{int(st.st_mtime_ns % 1_000_000_000):09d}Z",
    }
    if kind == "FILE_TYPE_SYMLINK":
        info["symlinkTarget"] = os.path.realpath(path)
        if os.path.isdir(path):
            info["type"] = "FILE_TYPE_DIRECTORY"
        elif os.path.isfile(path):
            info["type"] = "FILE_TYPE_FILE"
    return info


def stat_entry(body: dict[str, Any]) -> dict[str, Any]:
    return {"entry": entry(resolve(body.get("path")))}


def list_dir(body: dict[str, Any]) -> dict[str, Any]:
    root = resolve(body.get("path"))
    depth = int(body.get("depth") or 1)
    if depth < 1:
        raise bad_request("depth must be at least 1")
    if not os.path.isdir(root):
        raise HTTPError(400 if os.path.exists(root) else 404, f"{root} is not a directory")
    return {"entries": list(_walk(root, depth))}


def _walk(folder: str, depth: int) -> Iterable[dict[str, Any]]:
    with os.scandir(folder) as items:
        names = sorted(item.name for item in items)
    for name in names:
        full = os.path.join(folder, name)
        try:
            info = entry(full)
        except FileNotFoundError:
            continue  # removed while listed
        yield info
        if depth > 1 and info["type"] == "FILE_TYPE_DIRECTORY" and not os.path.islink(full):
            yield from _walk(full, depth - 1)


def make_dir(body: dict[str, Any]) -> dict[str, Any]:
    path = resolve(body.get("path"))
    if os.path.exists(path):
        raise HTTPError(409, f"{path} already exists")
    os.makedirs(path)
    return {"entry": entry(path)}


def move(body: dict[str, Any]) -> dict[str, Any]:
    source, destination = resolve(body.get("source")), resolve(body.get("destination"))
    os.makedirs(os.path.dirname(destination) or "/", exist_ok=True)
    os.rename(source, destination)
    return {"entry": entry(destination)}


def remove(body: dict[str, Any]) -> dict[str, Any]:
    path = resolve(body.get("path"))
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    return {}


def read_range(path: Any, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes of a file from ``offset`` (fewer: its end)."""
    full = resolve(path)
    if os.path.isdir(full):
        raise HTTPError(400, f"{full} is a directory")
    with open(full, "rb") as f:
        f.seek(offset)
        return f.read(min(max(length, 0), MAX_RANGE))


def write_range(path: Any, offset: int, chunks: Iterable[bytes]) -> dict[str, Any]:
    """Write a part of a file: offset 0 creates (or empties) it, later parts go where they say."""
    full = resolve(path)
    if os.path.isdir(full):
        raise HTTPError(400, f"{full} is a directory")
    os.makedirs(os.path.dirname(full) or "/", exist_ok=True)
    with open(full, "wb" if offset == 0 else "r+b") as f:
        if offset:
            f.seek(offset)
        for chunk in chunks:
            f.write(chunk)
    return {"name": os.path.basename(full), "type": "file", "path": full}
