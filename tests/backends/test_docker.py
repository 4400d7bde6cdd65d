"""The backend contract on Docker (runc), plus what only Docker's own inspect can show."""

from __future__ import annotations

import os
import time

import pytest

from backends.docker import PIDS_LIMIT

from .contract import BackendContract, docker_unavailable

pytestmark = pytest.mark.docker


class TestDockerBackend(BackendContract):
    deployment = "docker"

    def unavailable(self) -> str | None:
        return docker_unavailable(self.image)

    def limits_of(self, backend, container_id):
        host_config = backend.client.api.inspect_container(container_id)["HostConfig"]
        return host_config["Memory"] or None, (host_config["NanoCpus"] / 1e9) or None

    def test_hardened_and_published_on_loopback_only(self, backend, shared):
        attrs = backend.client.api.inspect_container(shared.container.id)
        host_config = attrs["HostConfig"]
        assert host_config["PortBindings"]["80/tcp"] == [
            {"HostIp": "127.0.0.1", "HostPort": str(shared.spec.host_port)}]
        assert host_config["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["PidsLimit"] == PIDS_LIMIT
        assert host_config["Runtime"] == "runc"

    def test_a_sweep_keeps_the_images_in_use_and_drops_those_left_behind(self, backend, start,
                                                                         make_spec):
        """Backend.tidy (every reconcile): an old, empty workspace image that a container still
        mounts stays; once no container mounts it (a teardown that never ran), it goes."""
        if backend.quota.unavailable:
            pytest.skip(backend.quota.unavailable)
        sandbox = start(make_spec(workspace_quota=64 << 20), wait=False)
        workspace = sandbox.spec.workspace
        image = os.path.join(os.path.dirname(workspace), ".quota",
                             os.path.basename(workspace) + ".img")
        old = time.time() - 3600  # past the sweep's age
        os.utime(image, (old, old))
        backend.tidy()
        assert os.path.ismount(workspace) and os.path.exists(image)
        backend.remove(sandbox.container.id)
        backend.tidy()
        assert not os.path.ismount(workspace) and not os.path.exists(image)
