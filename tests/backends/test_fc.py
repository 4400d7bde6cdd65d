"""Function Compute: the backend contract against ``FakeFunctionComputeControlPlane``
(tests/doubles), plus what only Function Compute has. What is real and what is faked:
tests/backends/cloud_planes.py."""

from __future__ import annotations

import json

import pytest

from .cloud_planes import CloudContract

pytestmark = pytest.mark.docker


class TestFCBackend(CloudContract):
    deployment = "fc"

    def test_function_shape(self, shared):
        function = self.plane.function(shared.container.id)
        assert function["runtime"] == "custom-container"
        assert function["customContainerConfig"] == {"image": shared.spec.image, "port": 80}
        assert function["instanceIsolationMode"] == "SESSION_EXCLUSIVE"
        assert function["sessionAffinity"] == "HEADER_FIELD"
        affinity = json.loads(function["sessionAffinityConfig"])
        assert affinity["affinityHeaderFieldName"] == "x-agentscope-runtime-session-id"
        assert function["environmentVariables"]["CONTRACT_MARK"] == shared.spec.name
        assert len(function["functionName"]) <= 64 and len(function["description"]) <= 256
        assert f"{shared.container.id}/sandbox-http" in self.plane.resources()

    def test_fc_needs_an_account_or_an_endpoint(self, prefix):
        from backends.fc import FCBackend
        from sandbox_core.errors import SettingsError

        with pytest.raises(SettingsError, match="FC_ACCOUNT_ID"):
            FCBackend(self.settings(prefix, FC_ENDPOINT=""))
