"""The backend contract on Docker (runc), plus what only Docker's own inspect can show."""

from __future__ import annotations

import os
import time

import pytest

from backends.docker import PIDS_LIMIT, DockerBackend

from .contract import BackendContract, Sandbox, docker_unavailable

pytestmark = pytest.mark.docker


class TestDockerBackend(BackendContract):
    deployment = "docker"

    def unavailable(self) -> str | None:
        return docker_unavailable(self.image)

    def limits_of(self, backend, container_id):
        host_config = backend.client.api.inspect_container(container_id)["HostConfig"]
        return host_config["Memory"] or None, (host_config["NanoCpus"] / 1e9) or None

    def test_hardened_and_reached_on_its_bridge_only(self, backend, shared):
        """DOCKER_ACCESS_MODE=bridge (the default): no host port, no docker-proxy; the agent is
        called at the container's address on the fleet's network."""
        attrs = backend.client.api.inspect_container(shared.container.id)
        host_config = attrs["HostConfig"]
        assert not backend.uses_host_port
        assert not host_config["PortBindings"]
        assert not any((attrs["NetworkSettings"]["Ports"] or {}).values())  # exposed, unpublished
        (network,) = attrs["NetworkSettings"]["Networks"].values()
        assert shared.container.url == f"http://{network['IPAddress']}:80"
        assert backend.inspect(shared.container.id).url == shared.container.url
        # calls to it are pinned to the fleet's bridge (sandbox_core.netpath), adopted ones too
        assert shared.container.interface == backend._bridge("open")
        adopting = DockerBackend(backend.settings)
        adopting.networks.clear()  # as a worker that never made it: Docker names the bridge
        assert adopting.inspect(shared.container.id).interface == shared.container.interface
        adopting.close()
        assert shared.answers()
        assert host_config["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["PidsLimit"] == PIDS_LIMIT
        assert host_config["Runtime"] == "runc"

    def test_port_mode_publishes_on_loopback_only(self, backend, make_spec):
        """DOCKER_ACCESS_MODE=port, for workers that cannot reach the bridge: the agent is
        published on 127.0.0.1:<host_port> and called there; inspect reports the port."""
        published = DockerBackend(backend.settings.replace(DOCKER_ACCESS_MODE="port"))
        spec = make_spec()
        container = published.create(spec)
        try:
            attrs = published.client.api.inspect_container(container.id)
            assert attrs["HostConfig"]["PortBindings"]["80/tcp"] == [
                {"HostIp": "127.0.0.1", "HostPort": str(spec.host_port)}]
            assert published.uses_host_port and container.url is None
            assert container.interface is None
            found = published.inspect(container.id)
            assert (found.host_port, found.url) == (spec.host_port, None)
            sandbox = Sandbox(spec, container)
            assert sandbox.url == f"http://127.0.0.1:{spec.host_port}/fastapi"
            sandbox.wait_ready(60)
        finally:
            published.remove(container.id)
            published.close()

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

