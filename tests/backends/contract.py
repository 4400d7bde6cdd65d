"""The lifecycle contract every isolation backend keeps (fsspec's ``tests/abstract`` habit).

``BackendContract`` holds tests written against ``backends.base.Backend`` only. Each backend's
test module subclasses it and says how to build that backend and whether its sandboxes can run on
this host; the same tests then run against Docker, gVisor and, as far as each host allows, BoxLite.

A subclass sets ``deployment`` (a ``CONTAINER_DEPLOYMENT`` value) and may override:

- ``unavailable()``: why the backend cannot be built here (the class is skipped, or failed under CI
  when ``required()`` says it must work);
- ``make_backend(settings, workdir)``: the backend (e.g. with its state under the test's folder);
- ``cannot_boot(error)``: for a create that failed, why the host cannot run a sandbox at all (the
  tests that need a running sandbox skip with that reason instead of failing; after the first such
  failure the others skip at once);
- ``limits_of(backend, container_id)``: the memory (bytes) and CPUs the runtime applied, where the
  backend can report them, and ``cpus_applied(requested)`` when it rounds them.

A sandbox's agent is called where the worker calls it: ``Container.url`` when the backend gave one
(a Docker bridge address, a cloud endpoint), else 127.0.0.1:<host_port>, and through the interface
the backend named, as the worker does (so a test's request never leaves the host either).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from backends import Backend, Container, ContainerSpec, backend_class
from backends.base import LABEL_FLEET, LABEL_HOST, LABEL_NAME, LABEL_TYPE, session_headers
from sandbox_core import netpath, polling
from sandbox_core.errors import BackendError, BadRequest, SandboxError
from sandbox_core.settings import parse_settings
from tests.conftest import BASE_IMAGE, REQUIRE_DOCKER, docker_unavailable
from tests.localfleet import free_port

__all__ = ["BASE_IMAGE", "REQUIRE_DOCKER", "BackendContract", "Sandbox", "docker_unavailable"]

MISSING_IMAGE = "agentscope/runtime-sandbox-no-such-type:latest"


class _Pinned(HTTPAdapter):
    """Connections bound to ``interface`` (sandbox_core.netpath), when there is one."""

    def __init__(self, interface: str | None) -> None:
        self.socket_options = netpath.socket_options(interface)
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, socket_options=self.socket_options, **kwargs)


class Sandbox:
    """A sandbox one test made: its spec, what create returned, and its agent's address."""

    def __init__(self, spec: ContainerSpec, container: Container) -> None:
        self.spec = spec
        self.container = container
        self.token = spec.environment["SECRET_TOKEN"]
        # Where the worker calls it: 127.0.0.1:<host_port>, or the URL the backend gave,
        # with the session headers every call carries (AgentClient).
        base = container.url or f"http://127.0.0.1:{spec.host_port}"
        self.url = f"{base}/fastapi"
        self.headers = session_headers(container.id)
        self.http = requests.Session()
        self.http.mount("http://", _Pinned(container.interface))

    def get(self, path: str, token: str | None = None, timeout: float = 5) -> requests.Response:
        headers = {**self.headers, "Authorization": f"Bearer {token or self.token}"}
        return self.http.get(f"{self.url}{path}", headers=headers, timeout=timeout)

    def answers(self) -> bool:
        """Whether the agent answers /healthz (a refused connection, or a cloud service's error
        for a stopped or deleted sandbox, is no)."""
        try:
            return self.get("/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def shell(self, command: str, timeout: float = 30) -> tuple[str, str, int]:
        """(stdout, stderr, returncode) of a command run by the agent's shell tool."""
        response = self.http.post(f"{self.url}/tools/run_shell_command",
                                 json={"command": command, "timeout": timeout},
                                 headers={**self.headers, "Authorization": f"Bearer {self.token}"},
                                 timeout=timeout + 5)
        assert response.status_code == 200, response.text
        parts = {c.get("description"): c["text"] for c in response.json()["content"]}
        return parts.get("stdout", ""), parts.get("stderr", ""), int(parts.get("returncode", "-1"))

    def wait_ready(self, timeout: float = 60) -> None:
        last = ["no answer"]

        def ready() -> bool:
            try:
                response = self.get("/healthz", timeout=2)
            except requests.RequestException as e:
                last[0] = str(e)
                return False
            last[0] = f"HTTP {response.status_code}: {response.text[:200]}"
            return response.status_code == 200

        if not polling.poll(ready, timeout, most=0.05):
            raise AssertionError(f"{self.spec.name}: the agent did not answer /healthz in {timeout}s: "
                                 f"{last[0]}")


class BackendContract:
    """Lifecycle tests against the Backend interface. Subclass it as ``Test<Name>Backend``."""

    deployment = "docker"
    image = BASE_IMAGE
    #: Whether create applies ContainerSpec.memory / cpus (checked through limits_of).
    supports_resource_limits = True
    ready_timeout = 60.0

    # -- what a subclass says about its backend ----------------------------------------------

    def unavailable(self) -> str | None:
        """Why this backend cannot be built on this host, or None."""
        return None

    def required(self) -> bool:
        """Whether ``unavailable()`` is a failure rather than a skip (CI must run it)."""
        return REQUIRE_DOCKER

    def cannot_boot(self, error: SandboxError) -> str | None:
        """Why a sandbox cannot run on this host at all, if ``error`` (from create) says so."""
        return None

    def limits_of(self, backend: Backend, container_id: str) -> tuple[int | None, float | None]:
        """(memory in bytes, CPUs) the runtime applied to the sandbox."""
        raise NotImplementedError

    def cpus_applied(self, requested: float) -> float:
        """The CPUs a backend gives for ``requested`` (BoxLite: whole vCPUs)."""
        return requested

    #: Set (on the subclass) by the first create that ``cannot_boot`` explained: the reason, and
    #: the spec and error of that create (for a backend's own tests of that failure).
    boot_failure: str | None = None
    boot_error: tuple[ContainerSpec, SandboxError] | None = None

    def _create_or_skip(self, backend: Backend, spec: ContainerSpec) -> Container:
        if type(self).boot_failure:
            pytest.skip(type(self).boot_failure)
        try:
            return backend.create(spec)
        except SandboxError as e:
            reason = self.cannot_boot(e)
            if reason:
                type(self).boot_failure = reason
                type(self).boot_error = (spec, e)
                pytest.skip(reason)
            raise

    # -- fixtures ----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    def workdir(self, tmp_path_factory) -> Path:
        return tmp_path_factory.mktemp(f"contract-{self.deployment}")

    @pytest.fixture(scope="class")
    def prefix(self) -> str:
        return f"sfcontract_{secrets.token_hex(3)}_"

    @pytest.fixture(scope="class")
    def backend(self, workdir, prefix) -> Iterator[Backend]:
        reason = self.unavailable()
        if reason:
            if self.required():
                pytest.fail(reason)
            pytest.skip(reason)
        settings = parse_settings({
            "CONTAINER_DEPLOYMENT": self.deployment,
            "CONTAINER_PREFIX_KEY": prefix,
            "FLEET_HOST_NAME": "contract-host",
            "DEFAULT_MOUNT_DIR": str(workdir / "mounts"),
        })
        backend = self.make_backend(settings, workdir)
        yield backend
        leaked = backend.list({LABEL_FLEET: prefix})
        for container in leaked:
            backend.remove(container.id)
        backend.cleanup_host()
        backend.close()
        assert not leaked, f"sandboxes left behind by the tests: {[c.name for c in leaked]}"

    def make_backend(self, settings, workdir: Path) -> Backend:
        return backend_class(self.deployment)(settings)

    @pytest.fixture
    def make_spec(self, workdir, prefix):
        def make(**changes) -> ContainerSpec:
            name = f"{prefix}{secrets.token_hex(4)}"
            values = {
                "name": name,
                "image": self.image,
                "host_port": free_port(),
                "environment": {"SECRET_TOKEN": secrets.token_hex(16), "CONTRACT_MARK": name},
                "labels": {LABEL_FLEET: prefix, LABEL_HOST: "contract-host", LABEL_TYPE: "base",
                           LABEL_NAME: name},
                "workspace": str(workdir / "mounts" / name),
            }
            values.update(changes)
            return ContainerSpec(**values)

        return make

    @pytest.fixture
    def start(self, backend, make_spec):
        """Create sandboxes from specs, wait until their agents answer; removed after the test."""
        made: list[str] = []

        def start(spec: ContainerSpec | None = None, wait: bool = True) -> Sandbox:
            spec = spec or make_spec()
            container = self._create_or_skip(backend, spec)
            made.append(container.id)
            sandbox = Sandbox(spec, container)
            if wait:
                sandbox.wait_ready(self.ready_timeout)
            return sandbox

        yield start
        for container_id in made:
            backend.remove(container_id)

    @pytest.fixture(scope="class")
    def shared(self, backend, workdir, prefix) -> Iterator[Sandbox]:
        """One running sandbox for the tests that only look (with a read-only mount)."""
        readonly = workdir / "readonly"
        readonly.mkdir(exist_ok=True)
        (readonly / "given.txt").write_text("from the host\n")
        name = f"{prefix}shared"
        spec = ContainerSpec(
            name=name, image=self.image, host_port=free_port(),
            environment={"SECRET_TOKEN": secrets.token_hex(16), "CONTRACT_MARK": name},
            labels={LABEL_FLEET: prefix, LABEL_HOST: "contract-host", LABEL_TYPE: "base",
                    LABEL_NAME: name},
            workspace=str(workdir / "mounts" / name),
            readonly_mounts={str(readonly): "/mnt/given"})
        container = self._create_or_skip(backend, spec)
        sandbox = Sandbox(spec, container)
        try:
            sandbox.wait_ready(self.ready_timeout)
            yield sandbox
        finally:
            backend.remove(container.id)

    # -- a running sandbox -------------------------------------------------------------------

    def test_create_returns_a_running_sandbox(self, shared):
        assert shared.container.name == shared.spec.name
        assert shared.container.status == "running"
        assert shared.container.id

    def test_agent_answers_with_the_spec_secret_only(self, shared):
        response = shared.get("/healthz")
        assert response.status_code == 200
        assert response.text.strip().strip('"') == "OK"
        assert shared.get("/healthz", token="not-the-secret").status_code == 403

    def test_environment_reaches_the_sandbox(self, shared):
        stdout, _, code = shared.shell("echo $CONTRACT_MARK")
        assert (stdout, code) == (f"{shared.spec.name}\n", 0)

    def test_inspect_and_status(self, backend, shared):
        found = backend.inspect(shared.container.id)
        assert found is not None
        assert found.name == shared.spec.name
        assert found.status == "running"
        assert found.labels.items() >= shared.spec.labels.items()
        assert backend.status(shared.container.id) == "running"
        by_name = backend.inspect(shared.spec.name)
        assert by_name is not None and by_name.id == found.id

    def test_unknown_sandbox_is_none(self, backend, prefix):
        assert backend.inspect(f"{prefix}never-made") is None
        assert backend.status(f"{prefix}never-made") is None

    def test_list_by_labels(self, backend, shared, prefix):
        mine = backend.list({LABEL_FLEET: prefix, LABEL_HOST: "contract-host"})
        assert shared.spec.name in [c.name for c in mine]
        assert all(c.labels.get(LABEL_FLEET) == prefix for c in mine)
        one = backend.list({LABEL_FLEET: prefix, LABEL_NAME: shared.spec.name})
        assert [c.name for c in one] == [shared.spec.name]
        assert one[0].id == shared.container.id
        assert backend.list({LABEL_FLEET: prefix, LABEL_HOST: "another-host"}) == []

    def test_workspace_is_shared_with_the_host(self, shared):
        workspace = Path(shared.spec.workspace)
        (workspace / "from-host.txt").write_text("hello from the host\n")
        stdout, _, code = shared.shell("cat /workspace/from-host.txt && echo inside > /workspace/out.txt")
        assert (stdout, code) == ("hello from the host\n", 0)
        assert (workspace / "out.txt").read_text() == "inside\n"

    def test_readonly_mount_reads_but_refuses_writes(self, shared):
        stdout, _, code = shared.shell("cat /mnt/given/given.txt")
        assert (stdout, code) == ("from the host\n", 0)
        _, stderr, code = shared.shell("echo x > /mnt/given/new.txt")
        assert code != 0
        assert "Read-only file system" in stderr
        assert not (Path(next(iter(shared.spec.readonly_mounts))) / "new.txt").exists()

    # -- lifecycle ---------------------------------------------------------------------------

    def test_stop_and_start(self, backend, start):
        sandbox = start()
        backend.stop(sandbox.container.id)
        assert backend.status(sandbox.container.id) not in ("running", None)
        assert not sandbox.answers()
        backend.start(sandbox.container.id)
        assert backend.status(sandbox.container.id) == "running"
        sandbox.wait_ready(self.ready_timeout)

    def test_start_or_stop_of_an_unknown_sandbox_is_a_backend_error(self, backend, prefix):
        with pytest.raises(BackendError):
            backend.start(f"{prefix}never-made")
        with pytest.raises(BackendError):
            backend.stop(f"{prefix}never-made")

    def test_remove_is_idempotent(self, backend, start, prefix):
        sandbox = start(wait=False)
        backend.remove(sandbox.container.id)
        assert backend.inspect(sandbox.container.id) is None
        assert backend.list({LABEL_FLEET: prefix, LABEL_NAME: sandbox.spec.name}) == []
        backend.remove(sandbox.container.id)  # again: not an error
        backend.remove(sandbox.spec.name)
        backend.remove(f"{prefix}never-made")
        assert not sandbox.answers()

    def test_remove_by_name(self, backend, start):
        sandbox = start(wait=False)
        backend.remove(sandbox.spec.name)
        assert backend.inspect(sandbox.container.id) is None

    def test_missing_image_is_a_bad_request_and_leaves_nothing(self, backend, make_spec, prefix):
        spec = make_spec(image=MISSING_IMAGE)
        with pytest.raises(BadRequest) as caught:
            backend.create(spec)
        assert MISSING_IMAGE in caught.value.detail
        assert backend.inspect(spec.name) is None
        assert backend.list({LABEL_FLEET: prefix, LABEL_NAME: spec.name}) == []

    def test_resource_limits_are_applied(self, backend, start, make_spec):
        if not self.supports_resource_limits:
            pytest.skip(f"{self.deployment} does not apply ContainerSpec memory/cpus")
        sandbox = start(make_spec(memory="256m", cpus=1.5))
        memory, cpus = self.limits_of(backend, sandbox.container.id)
        assert memory == 256 * 1024 * 1024
        assert cpus == pytest.approx(self.cpus_applied(1.5))


def cgroup_limits(sandbox: Sandbox) -> tuple[int | None, float | None]:
    """Memory and CPU limits as the sandbox's own cgroup (v1 or v2) shows them, read by its shell."""
    stdout, _, _ = sandbox.shell(
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max 2>/dev/null || "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    parts = stdout.split()
    if len(parts) == 3:  # v2: "<bytes> <quota> <period>"; v1: bytes, quota, period
        memory, quota, period = parts
    else:
        return None, None
    cpus = None if quota in ("max", "-1") else int(quota) / int(period)
    return (None if memory == "max" else int(memory)), cpus
