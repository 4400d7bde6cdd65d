"""BoxLite micro-VM sandboxes (PyPI ``boxlite``), booted from local OCI layouts of the fleet's images.

No registry is needed: an image built on this host is exported once per image id with
``skopeo copy docker-daemon:<id> oci:<dir>`` into ``.cache/boxlite/oci/<id>`` (the checkout's
gitignored cache; ``~/.cache/sandbox-fleet/boxlite`` for an installed package) and handed to
BoxLite as ``rootfs_path``. A box gets the spec's environment (``SECRET_TOKEN`` included), its
workspace at /workspace, the read-only mounts, port 80 published on ``127.0.0.1:<host_port>``,
whole vCPUs and MiB of memory, and the same capability policy as a Docker sandbox. BoxLite has
no labels, so a box's labels live in a JSON sidecar next to BoxLite's own state
(``<home>/sandbox-fleet/<name>.json``, mode 0600).

BoxLite's API is asyncio; this backend runs it on one private event loop thread and waits for
each call with a timeout, so the worker's threads use it like the Docker backend. A VM that cannot
boot is removed at once (box, disk, sidecar) and reported as a BackendError that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import boxlite
import docker
from docker.errors import DockerException, ImageNotFound

from sandbox_core import safecopy
from sandbox_core.errors import BackendError, BadRequest, SettingsError

from . import capabilities
from .base import Backend, Container, ContainerSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHECKOUT = Path(__file__).resolve().parents[1]
#: Where OCI layouts are cached, one folder per image id: the checkout's gitignored .cache/ when
#: running from one, else the user's cache (an installed package's folder is no place for them).
DEFAULT_CACHE = (_CHECKOUT / ".cache" / "boxlite" if (_CHECKOUT / "setup.cfg").is_file()
                 else Path.home() / ".cache" / "sandbox-fleet" / "boxlite")
#: BoxLite's own state (boxes, disks, logs); the label sidecars go in its sandbox-fleet/ folder.
DEFAULT_HOME = Path.home() / ".boxlite"
#: BoxLite's states, as Docker names them (the fleet reads Docker's words).
STATUS = {"running": "running", "configured": "created", "stopped": "exited", "failed": "dead",
          "paused": "paused", "stopping": "exited", "starting": "running"}
CALL_TIMEOUT = 60.0
SKOPEO_TIMEOUT = 600.0


class BoxLiteBackend(Backend):
    name = "boxlite"

    def __init__(self, settings, *, home: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        super().__init__(settings)
        if shutil.which("skopeo") is None:
            raise SettingsError("CONTAINER_DEPLOYMENT=boxlite needs skopeo to export images as OCI "
                                "layouts: apt-get install -y skopeo")
        if not os.path.exists("/dev/kvm"):
            raise SettingsError("CONTAINER_DEPLOYMENT=boxlite needs /dev/kvm (BoxLite boots micro-VMs)")
        try:
            self.docker = docker.from_env(timeout=60)
            self.docker.ping()
        except DockerException as e:
            raise SettingsError("CONTAINER_DEPLOYMENT=boxlite reads the fleet's images from Docker, "
                                f"which cannot be reached: {e}") from e
        self.home = Path(home) if home else DEFAULT_HOME
        self.cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
        self.sidecars = self.home / "sandbox-fleet"
        self.sidecars.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.boot_timeout = float(settings.FLEET_CREATE_TIMEOUT)
        self._layout_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="boxlite-loop", daemon=True)
        self._thread.start()
        self._runtime: boxlite.Boxlite | None = None

    @property
    def runtime(self) -> boxlite.Boxlite:
        """BoxLite's runtime, opened on first use: one process at a time may hold a BoxLite home,
        and only the host's lifecycle worker needs it (the calls worker never opens it)."""
        with self._lock:
            if self._runtime is None:
                try:
                    self._runtime = self._call(self._open_runtime)
                except boxlite.BoxliteError as e:
                    if "already using" in str(e):
                        raise BackendError(
                            f"BoxLite home {self.home} is held by another process: run one lifecycle "
                            "worker per BoxLite host (docs/backends.md)") from e
                    raise BackendError(f"boxlite could not open its runtime in {self.home}: {e}") from e
            return self._runtime

    # -- Backend -----------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        layout = self.layout(spec.image)
        options = box_options(spec, layout, self._capabilities_for(spec.image))
        if self._info(spec.name) is not None:  # before the sidecar: never relabel another box
            raise BackendError(f"boxlite could not create {spec.name}: a box of that name exists")
        if spec.workspace:
            safecopy.ensure_dir(spec.workspace)  # refuses a link there
        self._write_sidecar(spec)  # first, so that reconcile finds any box this create leaves
        box_id = None
        try:
            box_id = self._call(self._create, options, spec.name)
            self._call(self._start, box_id, timeout=self.boot_timeout + 30)
        except BaseException as e:  # the job's time limit too: never leave half a box
            detail = self._boot_log(box_id)
            self._discard(box_id, spec.name)
            if isinstance(e, boxlite.BoxliteError | TimeoutError):
                raise BackendError(explain_failure(spec.name, e, detail)) from e
            raise
        return Container(id=box_id, name=spec.name, status="running", labels=dict(spec.labels))

    def remove(self, container_id: str) -> None:
        info = self._info(container_id)
        name = info.name if info is not None else container_id
        if info is not None:
            try:
                self._call(self.runtime.remove, info.id, force=True)
            except boxlite.NotFoundError:
                pass
            except boxlite.BoxliteError as e:
                raise BackendError(f"boxlite could not remove {name}: {e}") from e
        self._sidecar(name).unlink(missing_ok=True)

    def inspect(self, container_id: str) -> Container | None:
        info = self._info(container_id)
        if info is None:
            return None
        return Container(id=info.id, name=info.name, status=_status(info),
                         labels=self._read_sidecar(info.name).get("labels", {}))

    def list(self, labels: dict[str, str]) -> list[Container]:
        try:
            boxes = self._call(self.runtime.list_info)
        except boxlite.BoxliteError as e:
            raise BackendError(f"boxlite could not list boxes: {e}") from e
        found = []
        for info in boxes:
            mine = self._read_sidecar(info.name).get("labels", {})
            if mine and mine.items() >= labels.items():
                found.append(Container(id=info.id, name=info.name, status=_status(info), labels=mine))
        return found

    def start(self, container_id: str) -> None:
        box = self._box(container_id)
        try:
            self._call(box.start, timeout=self.boot_timeout + 30)
        except (boxlite.BoxliteError, TimeoutError) as e:
            raise BackendError(explain_failure(container_id, e, self._boot_log(box.id))) from e

    def stop(self, container_id: str, timeout: int = 1) -> None:
        box = self._box(container_id)
        try:
            self._call(box.stop)
        except boxlite.BoxliteError as e:
            raise BackendError(f"boxlite could not stop {container_id}: {e}") from e

    def close(self) -> None:
        if self._runtime is not None:
            with contextlib.suppress(Exception):
                self._call(self._close_runtime, timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.docker.close()

    # -- OCI layouts -------------------------------------------------------------------------

    def layout(self, image: str) -> Path:
        """The OCI layout of ``image`` as this host's Docker has it, exported once per image id."""
        try:
            image_id = self.docker.api.inspect_image(image)["Id"]
        except ImageNotFound as e:
            raise BadRequest(
                f"image {image} is not on this host; build it with `runtime-sandbox-builder`") from e
        except DockerException as e:
            raise BackendError(f"docker could not inspect image {image}: {e}") from e
        target = self.cache / "oci" / image_id.replace(":", "-")
        with self._lock:
            lock = self._layout_locks.setdefault(image_id, threading.Lock())
        with lock:
            if (target / "index.json").is_file():
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
            shutil.rmtree(partial, ignore_errors=True)
            log.info("exporting %s (%s) as an OCI layout for BoxLite", image, image_id[:19])
            try:
                done = subprocess.run(
                    ["skopeo", "copy", "--quiet", f"docker-daemon:{image_id}", f"oci:{partial}:latest"],
                    capture_output=True, text=True, timeout=SKOPEO_TIMEOUT)
            except subprocess.TimeoutExpired as e:
                shutil.rmtree(partial, ignore_errors=True)
                raise BackendError(f"skopeo took over {SKOPEO_TIMEOUT:.0f}s exporting {image}") from e
            if done.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                raise BackendError(f"skopeo could not export {image}: {done.stderr.strip()[-500:]}")
            (partial / "sandbox-fleet-image").write_text(f"{image}\n{image_id}\n")
            try:
                partial.rename(target)
            except OSError:  # another worker on this host made it first
                shutil.rmtree(partial, ignore_errors=True)
            return target

    # -- helpers -----------------------------------------------------------------------------

    def _call(self, function: Callable[..., Awaitable[T]], *args: Any, timeout: float = CALL_TIMEOUT,
              **kwargs: Any) -> T:
        """Call a BoxLite coroutine function on the private loop (its futures need a running loop
        in the calling thread) and wait at most ``timeout`` seconds for it."""

        async def call() -> T:
            return await asyncio.wait_for(_awaitable(function(*args, **kwargs)), timeout)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    async def _open_runtime(self) -> boxlite.Boxlite:
        return boxlite.Boxlite(boxlite.Options(home_dir=str(self.home)))

    async def _close_runtime(self) -> None:
        closed = self.runtime.close()
        if closed is not None:
            await closed

    async def _create(self, options: dict, name: str) -> str:
        box = await self.runtime.create(boxlite.BoxOptions(**options), name=name)
        return box.id

    async def _start(self, box_id: str) -> None:
        box = await self.runtime.get(box_id)
        await box.start()

    def _info(self, id_or_name: str):
        try:
            return self._call(self.runtime.get_info, id_or_name)
        except boxlite.NotFoundError:
            return None
        except boxlite.BoxliteError as e:
            raise BackendError(f"boxlite could not inspect {id_or_name}: {e}") from e

    def _box(self, id_or_name: str):
        try:
            box = self._call(self.runtime.get, id_or_name)
        except boxlite.BoxliteError as e:
            raise BackendError(f"boxlite could not find {id_or_name}: {e}") from e
        if box is None:
            raise BackendError(f"box {id_or_name} does not exist")
        return box

    def _discard(self, box_id: str | None, name: str) -> None:
        """Remove what a failed create made: the box (its disk and logs) and the sidecar."""
        for target in (box_id, name):
            if target is None:
                continue
            with contextlib.suppress(boxlite.BoxliteError, TimeoutError):
                self._call(self.runtime.remove, target, force=True)
        if box_id:
            _kill_shims(self.home / "boxes" / box_id)
        self._sidecar(name).unlink(missing_ok=True)

    def _boot_log(self, box_id: str | None) -> str:
        """The VMM's last error line of a box that did not boot (read before it is removed)."""
        if not box_id:
            return ""
        try:
            text = (self.home / "boxes" / box_id / "shim.stderr").read_text(errors="replace")
        except OSError:
            return ""
        errors = [line for line in text.splitlines() if "ERROR" in line or "error" in line]
        return errors[-1].strip()[-300:] if errors else ""

    def _capabilities_for(self, image: str) -> list[str]:
        try:
            labels = self.docker.api.inspect_image(image)["Config"].get("Labels") or {}
        except DockerException:
            labels = {}
        return capabilities.for_image(labels)

    def _sidecar(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise BadRequest(f"invalid sandbox name {name!r}")
        return self.sidecars / f"{name}.json"

    def _write_sidecar(self, spec: ContainerSpec) -> None:
        path = self._sidecar(spec.name)
        record = {"name": spec.name, "labels": spec.labels, "image": spec.image,
                  "host_port": spec.host_port, "workspace": spec.workspace}
        fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(f"{path}.tmp", path)

    def _read_sidecar(self, name: str) -> dict:
        try:
            return json.loads(self._sidecar(name).read_text())
        except (OSError, ValueError, BadRequest):
            return {}


def box_options(spec: ContainerSpec, layout: Path, capabilities: list[str]) -> dict[str, Any]:
    """The keyword arguments of ``boxlite.BoxOptions`` for a spec (no I/O: tested on its own)."""
    volumes: list[tuple[str, str, bool]] = []
    if spec.workspace:
        volumes.append((os.path.abspath(spec.workspace), "/workspace", False))
    for host_path, guest_path in spec.readonly_mounts.items():
        volumes.append((os.path.abspath(host_path), guest_path, True))
    options: dict[str, Any] = {
        "rootfs_path": str(layout),
        "env": sorted(spec.environment.items()),
        "volumes": volumes,
        "ports": [(spec.host_port, 80, "tcp", "127.0.0.1")],
        "auto_remove": False,  # a stopped sandbox stays until the fleet removes it, as in Docker
        "detach": True,  # and it outlives the worker process that started it
        "advanced": boxlite.AdvancedBoxOptions(
            capabilities=boxlite.ContainerCapabilities(add=list(capabilities), drop=["ALL"])),
    }
    if spec.memory:
        options["memory_mib"] = memory_mib(spec.memory)
    if spec.cpus:
        options["cpus"] = max(1, math.ceil(spec.cpus))  # BoxLite gives whole vCPUs
    for key, value in spec.runtime_config.items():  # a type's runtime_config: BoxOptions' own keys
        if key in _BOX_OPTION_KEYS:
            options[key] = value
        else:
            log.warning("sandbox %s: runtime_config %r is not a BoxLite option; ignored", spec.name, key)
    return options


_BOX_OPTION_KEYS = {"cpus", "memory_mib", "disk_size_gb", "working_dir", "env", "volumes", "network",
                    "ports", "entrypoint", "cmd", "user", "advanced"}


def memory_mib(value: str | int) -> int:
    """Docker's memory notation (``512m``, ``1g``, bytes) in whole MiB, rounded up."""
    text = str(value).strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    scale = units.get(text[-1:], 1)
    size = float(text[:-1] if scale > 1 else text) * scale
    return max(1, math.ceil(size / (1 << 20)))


def explain_failure(name: str, error: BaseException, vmm_log: str) -> str:
    """A message an operator can act on, for a box that could not be created or booted."""
    if isinstance(error, TimeoutError):
        return f"boxlite: the micro-VM of {name} did not boot in time"
    text = str(error)
    message = f"boxlite could not start the micro-VM of {name}: {text}"
    if vmm_log:
        message += f" (VMM: {vmm_log})"
    if "failed to start" in text or "KVM" in vmm_log:
        message += (". BoxLite needs a /dev/kvm that can run its guest kernel; on hosts whose KVM is "
                    "paravirtual (nested in another hypervisor) the VM cannot boot: use "
                    "CONTAINER_DEPLOYMENT=gvisor or docker there (docs/backends.md)")
    return message


def _status(info) -> str:
    return STATUS.get(info.state.status, info.state.status)


async def _awaitable(value: Awaitable[T]) -> T:
    return await value


def shim_processes(folder: Path) -> dict[int, str]:
    """BoxLite's VMM processes (boxlite-shim) whose command line names ``folder`` (a BoxLite home,
    or one box's folder), by pid."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "boxlite-shim" in cmdline and str(folder) in cmdline:
            found[int(pid)] = cmdline
    return found


def _kill_shims(box_dir: Path) -> None:
    """A boot cut off by its timeout can leave the box's VMM running after the runtime removed
    the box: kill it."""
    for pid in shim_processes(box_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            log.warning("box %s: killed its VMM left after a failed boot", box_dir.name)
