"""A backend for tests only: each "container" is the in-sandbox agent run as a local process.

It lets the backend contract, the worker's lifecycle, reconcile, the job client and the crash tests
run with Redis alone, no Docker. It is never in the user-facing registry: loading this file (a
fleet's ``--extension``, which runtime-sandbox-server loads in the API and every worker) registers
it as ``CONTAINER_DEPLOYMENT=local-process-for-tests``.

It keeps the Docker backend's contract where a process can:

- a sandbox is ``python local_init.py`` (its PID 1, in a session and process group of its own,
  dying with the worker that started it) running ``python -m sandbox_agent`` on
  127.0.0.1:<host_port>; status ``running`` while that init lives, else ``exited``;
- name, id, image, labels, environment, port and workspace are a JSON file per sandbox in one
  folder per machine (as one Docker engine per machine), so list, inspect and adopt work across
  worker restarts and from the test process;
- images: ``*/runtime-sandbox-base:*`` and the crash tests' ``*/slowstart:*`` (its agent starts
  8 s late); any other is a BadRequest, as a missing image is.

What a process cannot give, it does not pretend: the sandbox sees its workspace at its host path
(the agent's WORKSPACE_DIR and the shell's working folder), not at /workspace; read-only mounts,
memory and CPU limits are not applied; there is no network isolation. And a sandbox dies with the
worker process that created it, where a Docker container outlives it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backends import register_backend
from backends.base import Backend, Container, ContainerSpec
from sandbox_core import safecopy
from sandbox_core.errors import BackendError, BadRequest

log = logging.getLogger(__name__)

NAME = "local-process-for-tests"
REPO = Path(__file__).resolve().parents[2]
AGENT_DIR = REPO / "images" / "agent"
INIT = Path(__file__).resolve().with_name("local_init.py")
#: One folder per machine, as one Docker engine per machine: several fleets and hosts share it.
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "sandbox-fleet-local-process-for-tests"
EVENTS = "events.jsonl"
#: The images this backend has (last part of the repository, any registry and tag) and the seconds
#: their agent waits before it starts.
IMAGES = {"runtime-sandbox-base": 0.0, "slowstart": 8.0}
#: What the project's base image says of itself: its agent takes the secret's sha256
#: (sandbox_workers.secret).
IMAGE_LABELS = {"io.sandbox-fleet.agent-auth": "sha256"}


class LocalProcessBackendForTests(Backend):
    name = NAME

    def __init__(self, settings, root: Path | None = None) -> None:
        super().__init__(settings)
        self.root = Path(root or DEFAULT_ROOT)
        self.root.mkdir(parents=True, exist_ok=True)
        #: PR_SET_PDEATHSIG fires when the *thread* that started a child ends: start them all
        #: from one thread that lives as long as this process.
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="local-sandbox-spawner")
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    # -- the Backend interface -----------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        delay = self._image_delay(spec.image)
        if delay is None:
            raise BadRequest(f"image {spec.image} is not on this host; the local-process test "
                             f"backend has {', '.join(IMAGES)}")
        workspace = spec.workspace or str(self._own_workspace(spec.name))
        safecopy.ensure_dir(workspace)
        if spec.readonly_mounts:
            log.warning("sandbox %s: read-only mounts are not applied by the local-process "
                        "backend", spec.name)
        state = {"id": secrets.token_hex(32), "name": spec.name, "image": spec.image,
                 "labels": dict(spec.labels), "environment": dict(spec.environment),
                 "host_port": spec.host_port, "workspace": workspace, "delay": delay,
                 "pid": None, "start_time": None}
        try:
            with open(self._path(spec.name), "x") as f:  # a name is taken once, as in Docker
                json.dump(state, f)
        except FileExistsError as e:
            raise BackendError(f"the name {spec.name} is already in use") from e
        try:
            self._spawn(state)
        except BaseException:
            self._delete(spec.name)
            raise
        return Container(id=state["id"], name=spec.name, status="running", labels=spec.labels)

    def remove(self, container_id: str) -> None:
        state = self._find(container_id)
        if state is None:
            return
        self._kill(state, grace=1.0)
        self._delete(state["name"])
        if state["workspace"] == str(self._own_workspace(state["name"])):  # made by create
            safecopy.remove_tree(state["workspace"])

    def inspect(self, container_id: str) -> Container | None:
        state = self._find(container_id)
        if state is None:
            return None
        return Container(id=state["id"], name=state["name"], status=self._status(state),
                         labels=state["labels"], image=state["image"],
                         environment=state["environment"], host_port=state["host_port"],
                         workspace=state["workspace"])

    def list(self, labels: dict[str, str]) -> list[Container]:
        found = []
        for state in self._states():
            if state["labels"].items() >= labels.items():
                found.append(Container(id=state["id"], name=state["name"],
                                       status=self._status(state), labels=state["labels"]))
        return found

    def start(self, container_id: str) -> None:
        state = self._require(container_id)
        if self._status(state) != "running":
            self._spawn(state)

    def stop(self, container_id: str, timeout: int = 1) -> None:
        self._kill(self._require(container_id), grace=float(timeout))

    def image_labels(self, image: str) -> dict[str, str]:
        return dict(IMAGE_LABELS) if self._image_delay(image) is not None else {}

    def processes(self, container_id: str) -> list[str]:
        """Command lines of the sandbox's processes (``docker top``)."""
        state = self._require(container_id)
        if self._status(state) != "running":
            return []
        return [_cmdline(pid) for pid in _descendants(state["pid"])]

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, state: dict) -> None:
        # The worker probed the port (lifecycle._take_port); one taken since makes the agent exit
        # at once, and the create fails waiting for it (its log in the root folder says why).
        port = state["host_port"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": state["workspace"], **state["environment"],
               "AGENT_HOST": "127.0.0.1", "AGENT_PORT": str(port),
               "WORKSPACE_DIR": state["workspace"], "MCP_SERVER_CONFIGS": "",
               "PYTHONPATH": str(AGENT_DIR), "PYTHONDONTWRITEBYTECODE": "1"}
        with open(self.root / f"{state['name']}.log", "ab") as out:
            proc = self._spawner.submit(
                subprocess.Popen, [sys.executable, str(INIT), str(os.getpid()), str(state["delay"])],
                env=env, cwd=state["workspace"], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True).result()
        with self._lock:
            self._children[proc.pid] = proc
        state.update(pid=proc.pid, start_time=_start_time(proc.pid))
        self._write(state)
        self._event("start", state)
        log.info("sandbox %s: agent process %s on 127.0.0.1:%s", state["name"], proc.pid, port)

    def _kill(self, state: dict, grace: float) -> None:
        """SIGTERM to the sandbox's init (the agent ends its tools, init kills what is left),
        SIGKILL to its process group after ``grace`` seconds; returns once it has ended."""
        if self._status(state) != "running":
            return
        pid = state["pid"]
        for kill, sig, wait in ((os.kill, signal.SIGTERM, grace), (_kill_tree, signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                kill(pid, sig)
            deadline = time.monotonic() + wait
            while self._status(state) == "running" and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._status(state) != "running":
                break
        else:
            raise BackendError(f"sandbox {state['name']}: its process {pid} did not end")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # an agent whose init was killed first

    def _status(self, state: dict) -> str:
        self._reap()
        pid = state.get("pid")
        if pid and _start_time(pid) == state.get("start_time") and _proc_state(pid) not in "ZX":
            return "running"
        return "exited"

    def _reap(self) -> None:
        """Collect the exit status of the sandboxes this process started (no zombies left)."""
        with self._lock:
            for pid, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[pid]

    # -- state files ----------------------------------------------------------------------------

    def _own_workspace(self, name: str) -> Path:
        """The folder of a sandbox created without a workspace (a container's own file system)."""
        return self.root / f"{name}.workspace"

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def _states(self) -> list[dict]:
        states = []
        for path in self.root.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):  # removed meanwhile
                states.append(json.loads(path.read_text()))
        return states

    def _find(self, container_id: str) -> dict | None:
        if "/" not in container_id:
            with contextlib.suppress(OSError, ValueError):
                return json.loads(self._path(container_id).read_text())
        return next((s for s in self._states() if s["id"] == container_id), None)

    def _require(self, container_id: str) -> dict:
        state = self._find(container_id)
        if state is None:
            raise BackendError(f"container {container_id} does not exist")
        return state

    def _write(self, state: dict) -> None:
        temporary = self.root / f".{state['name']}.{secrets.token_hex(4)}"
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self._path(state["name"]))

    def _event(self, action: str, state: dict) -> None:
        """One line of the engine's event log, as Docker's ``docker events`` (LocalEngineForTests
        reads it): one append each, so concurrent writers do not interleave."""
        line = json.dumps({"Type": "container", "Action": action, "status": action,
                           "id": state["id"], "time": time.time(),
                           "Actor": {"ID": state["id"], "Attributes": {"name": state["name"]}}})
        with open(self.root / EVENTS, "a") as f:
            f.write(line + "\n")

    def _delete(self, name: str) -> None:
        for path in (self._path(name), self.root / f"{name}.log"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @staticmethod
    def _image_delay(image: str) -> float | None:
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        return IMAGES.get(repository.rsplit("/", 1)[-1])


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; [] if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None  # field 22: a pid reused later has another


def _proc_state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0] if fields else "X"


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


def _kill_tree(root: int, sig: int) -> None:
    """Signal ``root`` and every process under it, as the end of a container's PID namespace
    does: killing only init's group would leave what the sandbox started in sessions of its
    own (``setsid cmd &``) once init, their subreaper, is gone (an agent slower than the
    SIGTERM grace on a busy host did that)."""
    for pid in reversed(_descendants(root)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(root, sig)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


register_backend(NAME, LocalProcessBackendForTests)
