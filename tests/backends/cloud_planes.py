"""The cloud backends' tests: the fake control planes (tests/doubles), how a backend or a fleet is
pointed at them, and the part of the backend contract both cloud backends share.

Real here: the official SDKs on the wire (ACS3-HMAC-SHA256 signatures, checked by the fakes), the
sandbox image run by the local Docker engine, and the fleet's whole path to it through the URL the
fake service gave. Faked: the control planes (resource states, delays, failures on demand) and
the services' data planes (a local proxy that requires the session-affinity header).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.base import LABEL_FLEET, LABEL_NAME
from sandbox_core import polling
from sandbox_core.errors import BackendError, BadRequest, SettingsError, Unavailable
from sandbox_core.settings import parse_settings

from .contract import BackendContract, Sandbox, docker_unavailable

ACCESS_KEY_ID = "LTAI5tSandboxFleetTests"
ACCESS_KEY_SECRET = secrets.token_urlsafe(22)
#: Per deployment: its settings' prefix, and the create step after which a failure must undo
#: the first one (an endpoint / a trigger after the runtime / function).
SERVICES = {"agentrun": ("AGENT_RUN", "CreateAgentRuntimeEndpoint"),
            "fc": ("FC", "CreateTrigger")}


def cloud_unavailable() -> str | None:
    try:
        import alibabacloud_agentrun20250910  # noqa: F401
        import alibabacloud_fc20230330  # noqa: F401
    except ImportError as e:
        return f"the cloud SDKs are not installed (pip install -e '.[cloud]'): {e}"
    return docker_unavailable()


def start_plane(deployment: str, secret: str = ACCESS_KEY_SECRET):
    if deployment == "agentrun":
        from tests.doubles.fake_agentrun import FakeAgentRunControlPlane

        return FakeAgentRunControlPlane(ACCESS_KEY_ID, secret).start()
    from tests.doubles.fake_fc import FakeFunctionComputeControlPlane

    return FakeFunctionComputeControlPlane(ACCESS_KEY_ID, secret).start()


def plane_settings(deployment: str, plane, secret: str = ACCESS_KEY_SECRET) -> dict[str, str]:
    """The settings that point a backend (or a fleet) at a fake plane."""
    group = SERVICES[deployment][0]
    return {f"{group}_ENDPOINT": plane.endpoint, f"{group}_PROTOCOL": "http",
            f"{group}_ACCESS_KEY_ID": ACCESS_KEY_ID, f"{group}_ACCESS_KEY_SECRET": secret}


def wait_until(predicate, timeout: float = 30, what: str = "condition"):
    value = polling.poll(predicate, timeout, first=0.05, most=0.2)
    if value:
        return value
    raise AssertionError(f"timed out waiting for {what}")


class CloudContract(BackendContract):
    """The contract on a cloud backend, against its fake, plus what only a cloud backend has."""

    plane = None
    ready_timeout = 60.0

    def unavailable(self) -> str | None:
        return cloud_unavailable()

    @pytest.fixture(scope="class")
    def workdir(self, tmp_path_factory) -> Iterator[Path]:
        reason = cloud_unavailable()
        if reason:
            pytest.skip(reason)
        plane = type(self).plane = start_plane(self.deployment)
        try:
            yield tmp_path_factory.mktemp(f"contract-{self.deployment}")
            # After the backend fixture removed what the tests left: nothing may remain.
            wait_until(lambda: not plane.resources(), 30, "the fake's resources gone")
            # an instance deleted while it started is removed by its starting thread, soon after
            wait_until(lambda: plane.instances.containers() == [], 30, "the fake's containers gone")
            assert plane.data_plane.unrouted == 0, "a call went without its session header"
        finally:
            plane.stop()

    def settings(self, prefix: str, **changes: str):
        return parse_settings({
            "CONTAINER_DEPLOYMENT": self.deployment, "CONTAINER_PREFIX_KEY": prefix,
            "FLEET_HOST_NAME": "contract-host", **plane_settings(self.deployment, self.plane),
            **changes})

    def make_backend(self, settings, workdir: Path):
        from backends import backend_class

        return backend_class(self.deployment)(self.settings(
            settings.CONTAINER_PREFIX_KEY, DEFAULT_MOUNT_DIR=settings.DEFAULT_MOUNT_DIR))

    def limits_of(self, backend, container_id):
        """What the fake's instance got from Docker, as the service sized it."""
        instance = self.plane.instances.instances[self._resource_key(container_id)]
        attrs = self.plane.instances.docker.containers.get(instance.container_id).attrs
        return attrs["HostConfig"]["Memory"], attrs["HostConfig"]["NanoCpus"] / 1e9

    def _resource_key(self, container_id: str) -> str:
        return container_id

    # -- a cloud sandbox shares no folder with the host: said, not faked ------------------------

    @pytest.fixture(scope="class")
    def shared(self, backend, workdir, prefix) -> Iterator[Sandbox]:
        """The contract's shared sandbox, without the read-only mount a cloud one cannot have."""
        name = f"{prefix}shared"
        spec = self._spec(prefix, name, workdir)
        sandbox = Sandbox(spec, self._create_or_skip(backend, spec))
        try:
            sandbox.wait_ready(self.ready_timeout)
            yield sandbox
        finally:
            backend.remove(sandbox.container.id)

    def _spec(self, prefix: str, name: str, workdir: Path, **changes):
        from backends.base import LABEL_HOST, LABEL_TYPE, ContainerSpec
        from tests.localfleet import free_port

        values = dict(name=name, image=self.image, host_port=free_port(),
                      environment={"SECRET_TOKEN": secrets.token_hex(16), "CONTRACT_MARK": name},
                      labels={LABEL_FLEET: prefix, LABEL_HOST: "contract-host", LABEL_TYPE: "base",
                              LABEL_NAME: name},
                      workspace=str(workdir / "mounts" / name))
        values.update(changes)
        return ContainerSpec(**values)

    def test_workspace_is_shared_with_the_host(self, shared):
        pytest.skip("a cloud sandbox's /workspace is in its instance, not a host folder")

    def test_readonly_mount_reads_but_refuses_writes(self, backend, make_spec, prefix):
        """A cloud sandbox cannot mount host folders: refused before anything is made."""
        spec = make_spec(readonly_mounts={"/etc": "/mnt/etc"})
        with pytest.raises(BadRequest, match="cannot mount host folders"):
            backend.create(spec)
        assert backend.list({LABEL_FLEET: prefix, LABEL_NAME: spec.name}) == []
        with pytest.raises(SettingsError, match="READONLY_MOUNTS"):
            type(backend)(self.settings(prefix, READONLY_MOUNTS='{"/etc": "/mnt/etc"}'))

    def test_resource_limits_are_applied(self, backend, start, make_spec):
        """The service's sizes: memory in 64 MB steps and at least 1 GB per vCPU."""
        from backends.cloud import instance_size

        sandbox = start(make_spec(memory="256m", cpus=1.5))
        memory, cpus = self.limits_of(backend, sandbox.container.id)
        assert instance_size("256m", 1.5, 2048, 2.0) == (1536, 1.5)
        assert (memory, cpus) == (1536 * 2 ** 20, 1.5)

    # -- the cloud's own -----------------------------------------------------------------------

    def test_the_agent_is_at_the_url_the_service_gave(self, shared):
        from backends.cloud import NAME_LIMIT

        assert shared.container.url.startswith(f"http://{self.plane.data_plane.base[7:]}/")
        assert shared.container.id.startswith("agentscope-sandbox-")
        assert len(shared.container.id) <= NAME_LIMIT
        assert self.plane.verifier.verified > 0  # every call the fake served was signed

    def test_a_wrong_secret_is_a_clear_error(self, prefix):
        from backends import backend_class

        group = SERVICES[self.deployment][0]
        with pytest.raises(SettingsError) as caught:
            backend_class(self.deployment)(self.settings(
                prefix, **{f"{group}_ACCESS_KEY_SECRET": "not-the-secret"}))
        assert "rejected the fleet's credentials (SignatureNotMatch)" in caught.value.detail
        assert f"{group}_ACCESS_KEY_SECRET" in caught.value.detail
        with pytest.raises(SettingsError, match="ACCESS_KEY_ID"):
            backend_class(self.deployment)(self.settings(prefix, **{f"{group}_ACCESS_KEY_ID": ""}))

    def test_a_failed_second_step_deletes_the_first(self, backend, make_spec, prefix):
        self.plane.fail(SERVICES[self.deployment][1], 500, "InternalError", "injected")
        spec = make_spec()
        with pytest.raises(Unavailable, match="injected"):
            backend.create(spec)
        assert backend.list({LABEL_FLEET: prefix, LABEL_NAME: spec.name}) == []
        wait_until(lambda: not [r for r in self.plane.resources() if backend._name(spec.name) in r],
                   what="the first resource deleted")

    def test_a_create_not_ready_in_time_leaves_nothing(self, backend, make_spec, prefix):
        from backends import backend_class

        own = backend_class(self.deployment)(self.settings(prefix, FLEET_CREATE_TIMEOUT="2"))
        self.plane.ready_delay = 3600
        spec = make_spec()
        try:
            with pytest.raises(Unavailable, match="not (ready|active) within 2s"):
                own.create(spec)
        finally:
            self.plane.ready_delay = 0.5
            own.close()
        assert backend.list({LABEL_FLEET: prefix, LABEL_NAME: spec.name}) == []

    def test_a_refused_delete_is_an_error_and_remove_finishes_later(self, backend, start):
        sandbox = start(wait=False)
        delete = "DeleteAgentRuntimeEndpoint" if self.deployment == "agentrun" else "DeleteTrigger"
        self.plane.fail(delete, 403, "AccessDenied", "no delete for you")
        with pytest.raises(BackendError, match="does not let the fleet delete"):
            backend.remove(sandbox.container.id)
        backend.remove(sandbox.container.id)
        assert backend.inspect(sandbox.container.id) is None
