"""gVisor: the backend contract under Docker's ``runsc`` runtime, proof that the sandbox kernel is
gVisor's, and a whole fleet with CONTAINER_DEPLOYMENT=gvisor driven by the agentscope SDK.

runsc must be registered in dockerd (``scripts/setup --gvisor`` or ``SANDBOX_FLEET_GVISOR=1``).
Without it these tests skip, saying so; when setup was asked to install it (SANDBOX_FLEET_GVISOR=1)
under CI or SANDBOX_FLEET_REQUIRE_DOCKER, a missing runtime fails the run instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .contract import REQUIRE_DOCKER, BackendContract, docker_unavailable

pytestmark = pytest.mark.docker

GVISOR_WANTED = os.environ.get("SANDBOX_FLEET_GVISOR") == "1"


def gvisor_unavailable() -> str | None:
    return docker_unavailable(runtime="runsc")


def host_cgroup_limits(container_id: str) -> tuple[int | None, float | None] | None:
    """Memory and CPUs from the container's cgroup on the host (v1, cgroupfs driver), or None."""
    root = "/sys/fs/cgroup"
    try:
        with open(f"{root}/memory/docker/{container_id}/memory.limit_in_bytes") as f:
            memory = int(f.read())
        with open(f"{root}/cpu/docker/{container_id}/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open(f"{root}/cpu/docker/{container_id}/cpu.cfs_period_us") as f:
            period = int(f.read())
    except (OSError, ValueError):
        return None
    return memory, (quota / period if quota > 0 else None)


class TestGVisorBackend(BackendContract):
    deployment = "gvisor"

    def unavailable(self) -> str | None:
        return gvisor_unavailable()

    def required(self) -> bool:
        return REQUIRE_DOCKER and GVISOR_WANTED

    def limits_of(self, backend, container_id):
        applied = host_cgroup_limits(container_id)
        if applied is None:
            pytest.skip("cannot read the sandbox's cgroup on this host (cgroup v1, cgroupfs expected)")
        return applied

    def test_sandbox_kernel_is_gvisor(self, shared):
        dmesg, _, code = shared.shell("dmesg")
        assert code == 0
        assert "gVisor" in dmesg, dmesg
        version, _, _ = shared.shell("cat /proc/version")
        assert version.startswith("Linux version"), version
        assert version.strip() != Path("/proc/version").read_text().strip()

    def test_runs_under_runsc_with_capabilities_dropped(self, backend, shared):
        host_config = backend.client.api.inspect_container(shared.container.id)["HostConfig"]
        assert host_config["Runtime"] == "runsc"
        assert host_config["CapDrop"] == ["ALL"]
        assert "NET_BIND_SERVICE" in host_config["CapAdd"]  # runsc has no unprivileged-port sysctl
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert not host_config["PortBindings"]  # reached at its bridge address (DOCKER_ACCESS_MODE)
        # The agent, root inside, holds no capability it was not given.
        status, _, _ = shared.shell("grep '^CapEff:' /proc/self/status")
        effective = int(status.split()[1], 16)
        assert effective & ~_allowed_bits(host_config["CapAdd"]) == 0, status


    def test_an_image_that_asks_for_no_capability_still_serves_port_80(self, backend, start, make_spec):
        """sandbox-fleet's images say they need no capability; under runc the unprivileged-port
        sysctl lets their agent bind port 80, under runsc NET_BIND_SERVICE alone does."""
        import io

        tag = f"sandbox-fleet-test/nocaps:{os.getpid()}"
        dockerfile = f'FROM {self.image}\nLABEL io.sandbox-fleet.capabilities=""\n'
        backend.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
        sandbox = None
        try:
            sandbox = start(make_spec(image=tag))
            host_config = backend.client.api.inspect_container(sandbox.container.id)["HostConfig"]
            assert host_config["CapAdd"] == ["NET_BIND_SERVICE"]
            assert sandbox.shell("echo ok")[0] == "ok\n"
        finally:
            if sandbox is not None:  # before the image, so that no dangling image is left
                backend.remove(sandbox.container.id)
            backend.client.images.remove(tag, force=True)


def _allowed_bits(names: list[str]) -> int:
    numbers = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "NET_BIND_SERVICE": 10}
    return sum(1 << numbers[n] for n in names if n in numbers)


def test_sdk_session_through_a_gvisor_fleet(make_fleet, docker_client):
    """The agentscope SDK, unchanged, against a whole fleet whose sandboxes run under runsc."""
    sandbox = pytest.importorskip("agentscope_runtime.sandbox")
    reason = gvisor_unavailable()
    if reason:
        if REQUIRE_DOCKER and GVISOR_WANTED:
            pytest.fail(reason)
        pytest.skip(reason)
    fleet = make_fleet(CONTAINER_DEPLOYMENT="gvisor", POOL_SIZE=0)
    with sandbox.BaseSandbox(base_url=fleet.url, bearer_token=fleet.token) as sb:
        result = sb.run_shell_command(command="dmesg | grep -c gVisor; echo hi")
        stdout = [c["text"] for c in result["content"] if c["description"] == "stdout"]
        assert result["isError"] is False, result
        count, hi = stdout[0].split()
        assert int(count) > 0 and hi == "hi"
        sb.run_ipython_cell(code="x = 6 * 7")
        cell = sb.run_ipython_cell(code="print(x)")
        assert [c["text"] for c in cell["content"] if c["description"] == "stdout"] == ["42\n"]
        sb.fs.write("notes/g.txt", "under gVisor")
        assert sb.fs.read("notes/g.txt") == "under gVisor"
        info = sb.get_info()
        container = docker_client.containers.get(info["container_id"])
        assert container.attrs["HostConfig"]["Runtime"] == "runsc"
        name = sb.sandbox_id
    fleet.wait_for(lambda: not fleet.containers(docker_client), what="the sandbox to be removed")
    assert fleet.data("get_info", {"identity": name})["state"] == "released"
