"""BoxLite: the backend contract, and everything up to the micro-VM's boot.

What runs on every host with ``boxlite`` (the ``boxlite`` extra), skopeo, /dev/kvm and Docker with
the base image: the OCI layout is exported once per image id, the BoxOptions built from a spec
(environment with SECRET_TOKEN, workspace and read-only volumes, port 80 on 127.0.0.1, limits,
capabilities) are accepted by the real BoxLite runtime, and a missing image is a BadRequest.

The boot itself is attempted for real. Where the host's KVM cannot run BoxLite's guest (the
project's CI hosts: a paravirtual /dev/kvm), the tests that need a running sandbox skip with the
error BoxLite gave, and one test checks that this failure reaches the caller as a clear
BackendError and leaves nothing behind. A boot is never faked.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from backends import backend_class
from sandbox_core.errors import BackendError

from .contract import BASE_IMAGE, REQUIRE_DOCKER, BackendContract, docker_unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BOXLITE_WANTED = os.environ.get("SANDBOX_FLEET_BOXLITE") == "1"
MIB = 1024 * 1024


NO_BOXLITE = "the boxlite package is not installed (pip install -e '.[boxlite]')"


def boxlite_unavailable() -> str | None:
    if importlib.util.find_spec("boxlite") is None:
        return NO_BOXLITE
    if shutil.which("skopeo") is None:
        return "skopeo is not installed (apt-get install skopeo; scripts/setup --boxlite)"
    if not os.path.exists("/dev/kvm"):
        return "this host has no /dev/kvm, which BoxLite's micro-VMs need"
    return docker_unavailable()


def needs_boxlite() -> None:
    """Skip a test that imports ``boxlite`` where it is not installed (fail where it must run)."""
    if importlib.util.find_spec("boxlite") is None:
        if REQUIRE_DOCKER and BOXLITE_WANTED:
            pytest.fail(NO_BOXLITE)
        pytest.skip(NO_BOXLITE)


def boot_failure_reason(error: BackendError) -> str | None:
    # On a paravirtual KVM the guest either fails at once or, on a loaded host, hangs until the
    # boot timeout: both are this host's inability to boot it.
    if "could not start the micro-VM" in error.detail or "did not boot in time" in error.detail:
        return f"BoxLite's micro-VM cannot boot on this host (not faked): {error.detail}"
    return None


def shim_processes(home: Path) -> list[str]:
    """Command lines of BoxLite VMM processes that belong to the BoxLite home ``home``."""
    from backends.boxlite import shim_processes as shims

    return list(shims(home).values())


class TestBoxLiteBackend(BackendContract):
    deployment = "boxlite"
    ready_timeout = 120.0

    def unavailable(self) -> str | None:
        return boxlite_unavailable()

    def required(self) -> bool:
        return REQUIRE_DOCKER and BOXLITE_WANTED

    def make_backend(self, settings, workdir):
        from backends.boxlite import BoxLiteBackend

        # A private BoxLite home (boxes, disks, logs); the OCI layouts use the real cache folder.
        return BoxLiteBackend(settings, home=workdir / "boxlite-home")

    def cannot_boot(self, error):
        return boot_failure_reason(error) if isinstance(error, BackendError) else None

    def limits_of(self, backend, container_id):
        info = backend._info(container_id)
        return info.memory_mib * MIB, info.cpus

    def cpus_applied(self, requested: float) -> float:
        return math.ceil(requested)

    @pytest.fixture(scope="class", autouse=True)
    def _drop_home(self, workdir):
        yield
        shutil.rmtree(workdir / "boxlite-home", ignore_errors=True)  # ~600 MB of disks

    # -- up to the boot: these run on every host -----------------------------------------------

    def test_the_registry_resolves_boxlite(self):
        needs_boxlite()
        from backends.boxlite import BoxLiteBackend

        assert backend_class("boxlite") is BoxLiteBackend

    def test_oci_layout_is_made_once_per_image_id(self, backend, monkeypatch):
        image_id = backend.docker.api.inspect_image(BASE_IMAGE)["Id"]
        layout = backend.layout(BASE_IMAGE)
        assert layout.name == image_id.replace(":", "-")
        assert layout.parent == backend.cache / "oci"
        assert (layout / "oci-layout").is_file() and (layout / "index.json").is_file()
        assert (layout / "sandbox-fleet-image").read_text().split() == [BASE_IMAGE, image_id]
        assert not [p for p in layout.parent.iterdir() if ".partial-" in p.name]

        def no_second_export(*args, **kwargs):
            raise AssertionError(f"skopeo ran again: {args}")

        monkeypatch.setattr(subprocess, "run", no_second_export)
        assert backend.layout(BASE_IMAGE) == layout

    def test_box_options_from_a_spec(self, backend, make_spec, workdir):
        import boxlite

        from backends.boxlite import box_options

        readonly = workdir / "ro-options"
        readonly.mkdir(exist_ok=True)
        spec = make_spec(memory="256m", cpus=0.5, readonly_mounts={str(readonly): "/mnt/ro"},
                         runtime_config={"disk_size_gb": 4, "privileged": True})
        options = box_options(spec, Path("/layouts/x"), ["KILL"])
        assert options["rootfs_path"] == "/layouts/x"
        assert dict(options["env"]) == spec.environment
        assert dict(options["env"])["SECRET_TOKEN"] == spec.environment["SECRET_TOKEN"]
        assert options["volumes"] == [(spec.workspace, "/workspace", False),
                                      (str(readonly), "/mnt/ro", True)]
        assert options["ports"] == [(spec.host_port, 80, "tcp", "127.0.0.1")]
        assert options["memory_mib"] == 256
        assert options["cpus"] == 1  # whole vCPUs, rounded up
        assert options["auto_remove"] is False and options["detach"] is True
        assert options["disk_size_gb"] == 4 and "privileged" not in options  # Docker-only key
        caps = options["advanced"].capabilities
        assert (list(caps.add), list(caps.drop)) == (["KILL"], ["ALL"])
        boxlite.BoxOptions(**options)  # the real class takes them

    def test_one_process_per_boxlite_home_and_it_says_so(self, backend):
        from backends.boxlite import BoxLiteBackend

        backend.list({})  # this backend holds its home now
        other = BoxLiteBackend(backend.settings, home=backend.home)  # opens nothing yet
        try:
            with pytest.raises(BackendError, match="held by another process"):
                other.list({})
        finally:
            other.close()

    def test_memory_notation(self):
        needs_boxlite()
        from backends.boxlite import memory_mib

        assert memory_mib("512m") == 512
        assert memory_mib("1g") == 1024
        assert memory_mib("1.5G") == 1536
        assert memory_mib(256 * MIB) == 256
        assert memory_mib("100k") == 1

    def test_the_runtime_accepts_the_box_and_records_it(self, backend, make_spec):
        """Up to the boot with BoxLite's own runtime: the box is configured (not started) from
        the OCI layout with the spec's limits, then removed."""
        from backends.boxlite import box_options

        spec = make_spec(memory="384m", cpus=2)
        options = box_options(spec, backend.layout(spec.image), ["KILL"])
        box_id = backend._call(backend._create, options, spec.name)
        try:
            info = backend._info(spec.name)
            assert info.id == box_id
            assert info.state.status == "configured"
            assert info.image == f"rootfs:{options['rootfs_path']}"
            assert (info.memory_mib, info.cpus) == (384, 2)
        finally:
            backend.remove(box_id)
        assert backend._info(box_id) is None

    def test_a_vm_that_cannot_boot_is_a_clear_backend_error_and_leaves_nothing(
            self, backend, make_spec, prefix):
        if type(self).boot_error:  # the contract's first create met it already: look at that one
            spec, error = type(self).boot_error
        else:
            spec = make_spec()
            try:
                container = backend.create(spec)
            except BackendError as e:
                error = e
            else:
                backend.remove(container.id)
                pytest.skip("this host boots BoxLite micro-VMs, so the boot failure cannot be provoked")
        assert f"could not start the micro-VM of {spec.name}" in error.detail
        assert "KVM" in error.detail, error.detail  # the VMM's own line, and what to do about it
        assert "docs/backends.md" in error.detail
        type(self).boot_failure = boot_failure_reason(error)
        # nothing left: no box, no disk or log folder, no sidecar, no VMM process
        assert backend.inspect(spec.name) is None
        assert backend.list({"io.sandbox-fleet.name": spec.name}) == []
        assert backend.list({"io.sandbox-fleet.prefix": prefix}) == []
        assert list((backend.home / "boxes").iterdir()) == []
        assert not (backend.sidecars / f"{spec.name}.json").exists()
        assert shim_processes(backend.home) == []


def test_a_boxlite_fleet_answers_a_create_with_the_boot_error(make_fleet, docker_client, tmp_path):
    """Through the whole fleet: the SDK's create gets ``data: null`` with the reason, and the fleet
    keeps nothing (no record left live, no box)."""
    reason = boxlite_unavailable()
    if reason:
        if REQUIRE_DOCKER and BOXLITE_WANTED:
            pytest.fail(reason)
        pytest.skip(reason)
    fleet = make_fleet(CONTAINER_DEPLOYMENT="boxlite", POOL_SIZE=0, FLEET_CREATE_TIMEOUT=90)
    answer = fleet.post("create", {"sandbox_type": "base"}, timeout=200).json()
    if answer.get("data"):
        fleet.post("release", {"identity": answer["data"]})
        pytest.skip("this host boots BoxLite micro-VMs, so the boot failure cannot be provoked")
    assert answer["data"] is None
    assert "micro-VM" in answer["detail"], answer
    assert fleet.get("fleet/status").json()["live"] == 0
    from backends.boxlite import DEFAULT_HOME  # where the fleet's workers keep BoxLite's state

    assert not list((DEFAULT_HOME / "sandbox-fleet").glob(f"{fleet.prefix}*"))  # no labelled box
    assert shim_processes(DEFAULT_HOME) == []
