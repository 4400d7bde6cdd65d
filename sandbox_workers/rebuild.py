"""What a host keeps outside Redis so that a Redis that restarts empty loses as little as possible.

- A live sandbox carries its record's lasting fields in its container's labels (set at create,
  read back by ``reconcile.adopt``). Labels are out of the sandbox's reach; an environment
  variable's value is not copied into them (only its name: the value is in the container's own
  environment).
- A recycled sandbox has no container, so the worker that recycles it writes a marker file beside
  its workspace, ``DEFAULT_MOUNT_DIR/<id>.fleet.json`` (never inside the workspace, which the
  sandbox can write), from which adopt brings the recycled record back: the session's next call
  restores the sandbox with its workspace.
- The store's epoch this host last saw, ``DEFAULT_MOUNT_DIR/.fleet-epoch-<host>``: a worker that
  starts against a store whose epoch differs (Redis restarted empty, or a private Redis started
  anew) knows the records of this host's sandboxes were lost, not never written, and adopts the
  sandboxes instead of removing them as strays.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile

from backends.base import (
    LABEL_DESKTOP_TOKEN,
    LABEL_ENV_KEYS,
    LABEL_FLEET,
    LABEL_HOST,
    LABEL_META,
    LABEL_NAME,
    LABEL_POOL,
    LABEL_SANDBOX_TYPE,
    LABEL_SESSION,
    LABEL_STORAGE_PATH,
    LABEL_TIMEOUT,
    LABEL_TYPE,
    LABEL_WORKSPACE_OWNED,
    Container,
)
from sandbox_core.registry import base_type
from sandbox_core.settings import Settings

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".fleet.json"
#: The record fields a recycled sandbox needs to be restored (see Fleet.restore).
MARKER_FIELDS = ("container_name", "session_id", "sandbox_type", "pool_type", "meta",
                 "session_ctx_id", "environment", "mount_dir", "workspace_owned", "storage_path",
                 "version", "timeout", "host", "desktop_token", "created_at", "recycled_at",
                 "recycle_reason")


# -- labels of a live sandbox ----------------------------------------------------------------

def labels_of(settings: Settings, host: str, record: dict) -> dict[str, str]:
    """The labels a sandbox's container is created with."""
    return {
        LABEL_FLEET: settings.CONTAINER_PREFIX_KEY, LABEL_HOST: host,
        LABEL_TYPE: base_type(record["sandbox_type"]), LABEL_NAME: record["container_name"],
        LABEL_SANDBOX_TYPE: record["sandbox_type"],
        LABEL_SESSION: record.get("session_ctx_id") or "",
        LABEL_POOL: record.get("pool_type") or "",
        LABEL_META: json.dumps(record.get("meta") or {}),
        LABEL_STORAGE_PATH: record.get("storage_path") or "",
        LABEL_DESKTOP_TOKEN: record.get("desktop_token") or "",
        LABEL_WORKSPACE_OWNED: "0" if str(record.get("workspace_owned")) == "0" else "1",
        LABEL_TIMEOUT: str(record.get("timeout") or ""),
        LABEL_ENV_KEYS: json.dumps(sorted(record.get("environment") or {})),
    }


def fields_from_labels(settings: Settings, container: Container) -> dict:
    """The record fields a container's labels (and environment) give back. A container created
    before these labels existed gets its type and the defaults."""
    labels, env = container.labels or {}, container.environment or {}
    try:
        meta = json.loads(labels.get(LABEL_META) or "{}")
        env_keys = json.loads(labels.get(LABEL_ENV_KEYS) or "[]")
    except ValueError:
        meta, env_keys = {}, []
    timeout = labels.get(LABEL_TIMEOUT) or ""
    return {
        "sandbox_type": labels.get(LABEL_SANDBOX_TYPE) or labels.get(LABEL_TYPE, "base"),
        "session_ctx_id": labels.get(LABEL_SESSION) or None,
        "pool_type": labels.get(LABEL_POOL) or None,
        "meta": meta if isinstance(meta, dict) else {},
        "storage_path": labels.get(LABEL_STORAGE_PATH) or None,
        "desktop_token": labels.get(LABEL_DESKTOP_TOKEN) or None,
        "workspace_owned": labels.get(LABEL_WORKSPACE_OWNED) != "0",
        "timeout": int(timeout) if timeout.isdigit() else settings.RUNTIME_SANDBOX_TIMEOUT,
        "environment": {k: env[k] for k in env_keys if isinstance(k, str) and k in env},
    }


# -- the epoch this host last saw ---------------------------------------------------------------

def _epoch_path(settings: Settings, host: str) -> str:
    return os.path.join(markers_dir(settings), f".fleet-epoch-{host}")


def remembered_epoch(settings: Settings, host: str) -> str | None:
    """The store's epoch when this host's worker last ran, or None on its first run here."""
    try:
        with open(_epoch_path(settings, host)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("host %s: cannot read the epoch it last saw: %s", host, e)
        return None


def remember_epoch(settings: Settings, host: str, epoch: str) -> None:
    path = _epoch_path(settings, host)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".epoch-")
        with os.fdopen(fd, "w") as f:
            f.write(epoch)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("host %s: cannot keep the epoch it saw (a Redis loss while it is stopped "
                    "will not be noticed): %s", host, e)


# -- markers of recycled sandboxes -------------------------------------------------------------

def markers_dir(settings: Settings) -> str:
    return os.path.abspath(settings.DEFAULT_MOUNT_DIR)


def marker_path(settings: Settings, name: str) -> str:
    session_id = name.removeprefix(settings.CONTAINER_PREFIX_KEY)
    return os.path.join(markers_dir(settings), session_id + MARKER_SUFFIX)


def write_marker(settings: Settings, record: dict) -> None:
    """Keep a recycled sandbox's record beside its workspace. Never fails the teardown."""
    name = record["container_name"]
    path = marker_path(settings, name)
    body = json.dumps({k: record.get(k) for k in MARKER_FIELDS})
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".marker-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("sandbox %s: could not write its recycle marker %s: %s", name, path, e)


def remove_marker(settings: Settings, name: str) -> None:
    try:
        os.unlink(marker_path(settings, name))
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("sandbox %s: could not remove its recycle marker: %s", name, e)


def read_markers(settings: Settings, host: str) -> list[dict]:
    """This host's recycle markers that look like ours, most recently recycled first."""
    folder = markers_dir(settings)
    try:
        files = [f for f in os.listdir(folder) if f.endswith(MARKER_SUFFIX)]
    except FileNotFoundError:
        return []
    found = []
    for file in files:
        try:
            with open(os.path.join(folder, file)) as f:
                marker = json.load(f)
        except (OSError, ValueError) as e:
            log.warning("recycle marker %s unreadable, skipped: %s", file, e)
            continue
        if _plausible(settings, host, file, marker):
            found.append(marker)
    return sorted(found, key=lambda m: m.get("recycled_at") or 0, reverse=True)


def _plausible(settings: Settings, host: str, file: str, marker: object) -> bool:
    """A marker this host wrote for the sandbox its file is named after. Only a client allowed to
    choose its folder (ALLOW_MOUNT_DIR) could place a file here, and then only for such folders."""
    if not isinstance(marker, dict) or marker.get("host") != host:
        return False
    session_id = file.removesuffix(MARKER_SUFFIX)
    if marker.get("container_name") != settings.CONTAINER_PREFIX_KEY + session_id or \
            not marker.get("session_ctx_id") or not isinstance(marker.get("mount_dir"), str):
        return False
    storage = marker.get("storage_path")
    if storage and not _inside_storage(settings, storage):
        return False
    if str(marker.get("workspace_owned")) != "0":  # a folder of DEFAULT_MOUNT_DIR's own
        return os.path.dirname(os.path.abspath(marker["mount_dir"])) == markers_dir(settings)
    return settings.ALLOW_MOUNT_DIR


def _inside_storage(settings: Settings, path: object) -> bool:
    """The fleet's own rule for storage paths (Fleet._storage_path): inside STORAGE_FOLDER."""
    folder = settings.STORAGE_FOLDER
    if not folder or not isinstance(path, str):
        return False
    norm = posixpath.normpath if settings.FILE_SYSTEM == "oss" else os.path.normpath
    root = norm(folder if settings.FILE_SYSTEM == "oss" else os.path.abspath(folder))
    return norm(path).startswith(root.rstrip("/") + "/")
