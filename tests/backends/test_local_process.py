"""The backend contract on the test suite's local-process backend (no Docker), plus what only a
process-based sandbox has to prove: it never outlives its worker nor leaves a process behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox_core import polling
from tests.doubles.local_process_backend import NAME, LocalProcessBackendForTests, _descendants

from .contract import BackendContract


def wait_until(predicate, timeout: float = 30, what: str = "condition"):
    value = polling.poll(predicate, timeout, first=0.05, most=0.05)
    if value:
        return value
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (OSError, IndexError):
        return False


class TestLocalProcessBackend(BackendContract):
    deployment = NAME
    #: A process gets no cgroup of its own here.
    supports_resource_limits = False
    ready_timeout = 30.0

    def make_backend(self, settings, workdir):
        return LocalProcessBackendForTests(settings, root=workdir / "engine")

    # -- where a process differs from a container: said, not faked -------------------------------

    def test_workspace_is_shared_with_the_host(self, shared):
        """The workspace is the shell's working folder (at its host path, not /workspace)."""
        workspace = Path(shared.spec.workspace)
        (workspace / "from-host.txt").write_text("hello from the host\n")
        stdout, _, code = shared.shell("cat from-host.txt && echo inside > out.txt && pwd")
        assert (stdout, code) == (f"hello from the host\n{workspace}\n", 0)
        assert (workspace / "out.txt").read_text() == "inside\n"

    def test_readonly_mount_reads_but_refuses_writes(self, shared):
        pytest.skip("a local process has no mount namespace: read-only mounts are not applied")

    # -- a sandbox is its processes --------------------------------------------------------------

    def test_state_outlives_the_backend_object(self, backend, shared, workdir):
        """A worker that restarts sees the same sandboxes: list and inspect read the state files."""
        again = LocalProcessBackendForTests(backend.settings, root=workdir / "engine")
        found = again.inspect(shared.spec.name)
        assert (found.id, found.status, found.host_port) == (
            shared.container.id, "running", shared.spec.host_port)
        assert found.environment["CONTRACT_MARK"] == shared.spec.name
        assert found.workspace == shared.spec.workspace
        assert again.inspect(shared.container.id).name == shared.spec.name

    def test_remove_ends_every_process_the_sandbox_started(self, backend, start):
        sandbox = start()
        stdout, _, _ = sandbox.shell("setsid sleep 300 > /dev/null 2>&1 & echo $!")
        background = int(stdout)
        assert alive(background)
        assert any("sleep 300" in c for c in backend.processes(sandbox.container.id))
        backend.remove(sandbox.container.id)
        wait_until(lambda: not alive(background), what="the background job to end")

    def test_a_sandbox_dies_with_the_worker_that_started_it(self, backend, make_spec, workdir):
        """PR_SET_PDEATHSIG: a worker killed with SIGKILL takes its sandboxes and their tools along;
        their state stays (status exited), for the next worker to clean up."""
        spec = make_spec()
        worker = textwrap.dedent(f"""
            import sys, time
            from sandbox_core.settings import parse_settings
            from tests.doubles.local_process_backend import LocalProcessBackendForTests
            from backends.base import ContainerSpec
            backend = LocalProcessBackendForTests(parse_settings({{}}), root={str(workdir / "engine")!r})
            backend.create(ContainerSpec(**{spec.__dict__!r}))
            print("created", flush=True)
            time.sleep(300)
        """)
        proc = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[2])
        try:
            assert proc.stdout.readline().strip() == "created"
            found = wait_until(lambda: backend.inspect(spec.name), what="the sandbox's state")
            assert found.status == "running"
            state = backend._find(spec.name)
            processes = _descendants(state["pid"])
        finally:
            proc.kill()
            proc.wait(10)
        wait_until(lambda: backend.status(spec.name) == "exited", what="the sandbox to end")
        wait_until(lambda: not any(alive(pid) for pid in processes), what="its processes to end")
        backend.remove(spec.name)
        assert backend.inspect(spec.name) is None

    def test_only_the_tests_can_choose_it(self):
        """A user's CONTAINER_DEPLOYMENT cannot build it: only the tests' extension registers it."""
        code = ("from backends import backend_class\n"
                "from sandbox_core.errors import SettingsError\n"
                f"try:\n    backend_class({NAME!r})\nexcept SettingsError as e:\n    print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[2], timeout=60)
        assert "the test suite's own backend" in done.stdout, done.stderr
