import pytest

from sandbox_core.errors import BadRequest, SettingsError
from sandbox_core.registry import build_image_uri, get_spec, load_extensions
from sandbox_core.settings import parse_settings

EXTENSION = '''
from sandbox_core.registry import SandboxRegistry, build_image_uri

@SandboxRegistry.register(build_image_uri("runtime-sandbox-mine"), sandbox_type="mine",
                          timeout=30, environment={"API_KEY": "k", "UNSET": None},
                          resource_limits={"memory": "256m", "cpu": 0.5})
class MySandbox:
    pass
'''


@pytest.fixture(autouse=True)
def _fresh_registry(clean_registry):
    """Every test here starts and ends with no custom type registered."""


def test_builtin_and_async_types():
    s = parse_settings({"RUNTIME_SANDBOX_REGISTRY": "reg.example", "RUNTIME_SANDBOX_IMAGE_TAG": "v9"})
    assert get_spec(s, "base").image == "reg.example/agentscope/runtime-sandbox-base:v9"
    assert get_spec(s, "base_async").image == get_spec(s, "base").image
    with pytest.raises(BadRequest, match="unknown sandbox_type 'nope'"):
        get_spec(s, "nope")


def test_extension_file_registers_a_type(tmp_path):
    ext = tmp_path / "my_ext.py"
    ext.write_text(EXTENSION)
    s = parse_settings({"DEFAULT_SANDBOX_TYPE": "base,mine"})
    load_extensions(s, [str(ext)])
    spec = get_spec(s, "mine")
    assert spec.image == "agentscope/runtime-sandbox-mine:latest"
    assert spec.timeout == 30
    assert spec.environment == {"API_KEY": "k"}
    assert spec.resource_limits == {"memory": "256m", "cpu": 0.5}
    assert build_image_uri("x", tag="t") == "agentscope/x:t"


def test_a_pooled_type_nobody_registered_stops_startup():
    with pytest.raises(SettingsError, match="DEFAULT_SANDBOX_TYPE"):
        load_extensions(parse_settings({"DEFAULT_SANDBOX_TYPE": "base,ghost"}), [])


def test_a_broken_extension_says_which(tmp_path):
    ext = tmp_path / "broken.py"
    ext.write_text("raise RuntimeError('boom')")
    with pytest.raises(SettingsError, match="broken.py failed to load: RuntimeError: boom"):
        load_extensions(parse_settings({}), [str(ext)])
    with pytest.raises(SettingsError, match="no_such_module"):
        load_extensions(parse_settings({}), ["no_such_module"])
