"""The backend contract on Docker (runc), plus what only Docker's own inspect can show."""

from __future__ import annotations

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
