"""Extensions written for agentscope-runtime load into sandbox-fleet's registry (no Docker)."""

from __future__ import annotations

import pytest

from sandbox_core.registry import get_spec, known_types, load_extensions
from sandbox_core.settings import parse_settings

pytest.importorskip("agentscope_runtime.sandbox.registry")

EXTENSION = '''
from agentscope_runtime.sandbox.registry import SandboxRegistry
from agentscope_runtime.sandbox.utils import build_image_uri


@SandboxRegistry.register(build_image_uri("runtime-sandbox-shimmed", registry=""),
                          sandbox_type="shimmed_type", timeout=33, description="from upstream",
                          environment={"KEY": "v"}, resource_limits={"memory": "1g", "cpu": 2},
                          runtime_config={"shm_size": "256m"})
class Shimmed:
    pass
'''


@pytest.fixture(autouse=True)
def _fresh_registry(clean_registry):
    """Every test here starts and ends with no custom type registered."""


def test_an_agentscope_extension_becomes_a_fleet_type(tmp_path):
    ext = tmp_path / "upstream_ext.py"
    ext.write_text(EXTENSION)
    settings = parse_settings({"DEFAULT_SANDBOX_TYPE": "base,shimmed_type"})
    load_extensions(settings, [str(ext)])
    spec = get_spec(settings, "shimmed_type")
    assert spec.image == "agentscope/runtime-sandbox-shimmed:latest"
    assert spec.timeout == 33 and spec.description == "from upstream"
    assert spec.environment == {"KEY": "v"}
    assert spec.resource_limits == {"memory": "1g", "cpu": 2}
    assert spec.runtime_config == {"shm_size": "256m"}  # mem_limit/nano_cpus come from the limits
    assert get_spec(settings, "shimmed_type_async") == spec
    # agentscope-runtime's own types (its box modules registered them) are not taken in
    assert "appworld" not in known_types() and "bfcl" not in known_types()
