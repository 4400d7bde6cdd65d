"""AgentRun: the backend contract against ``FakeAgentRunControlPlane`` (tests/doubles), plus what
only AgentRun has. What is real and what is faked: tests/backends/cloud_planes.py."""

from __future__ import annotations

import pytest

from .cloud_planes import CloudContract

pytestmark = pytest.mark.docker


class TestAgentRunBackend(CloudContract):
    deployment = "agentrun"

    def _resource_key(self, container_id: str) -> str:
        return self.plane.runtime_named(container_id)["agentRuntimeId"]

    def test_runtime_shape(self, shared):
        runtime = self.plane.runtime_named(shared.container.id)
        assert runtime["artifactType"] == "Container" and runtime["port"] == 80
        assert runtime["containerConfiguration"]["image"] == shared.spec.image
        assert runtime["sessionAffinityType"] == "HEADER_FIELD"
        assert runtime["headerFieldName"] == "x-agentrun-session-id"
        assert runtime["networkConfiguration"] == {"networkMode": "PUBLIC"}
        assert runtime["environmentVariables"]["CONTRACT_MARK"] == shared.spec.name
        assert len(runtime["description"]) <= 256
        endpoint = self.plane.resources()
        assert f"{shared.container.id}/sandbox" in endpoint
