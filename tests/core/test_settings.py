import pytest

from sandbox_core.errors import SettingsError
from sandbox_core.settings import describe, load_settings, parse_settings


def test_defaults_are_upstreams():
    s = parse_settings({})
    assert (s.HOST, s.PORT, s.WORKERS, s.POOL_SIZE) == ("127.0.0.1", 8000, 1, 1)
    assert s.DEFAULT_SANDBOX_TYPE == ("base",)
    assert s.CONTAINER_PREFIX_KEY == "runtime_sandbox_container_"
    assert s.PORT_RANGE == (49152, 59152)
    assert s.image_uri("runtime-sandbox-base") == "agentscope/runtime-sandbox-base:latest"


@pytest.mark.parametrize("text", ["base,gui", '["base","gui"]', "[base, gui]", " base , gui "])
def test_default_sandbox_type_formats(text):
    assert parse_settings({"DEFAULT_SANDBOX_TYPE": text}).DEFAULT_SANDBOX_TYPE == ("base", "gui")


def test_json_settings():
    s = parse_settings({"PORT_RANGE": "[1000, 1100]", "READONLY_MOUNTS": '{"/data": "/mnt/data"}'})
    assert s.PORT_RANGE == (1000, 1100)
    assert s.READONLY_MOUNTS == {"/data": "/mnt/data"}


@pytest.mark.parametrize("name,value", [
    ("POOL_SIZE", "many"), ("PORT_RANGE", "[5,1]"), ("READONLY_MOUNTS", "[1]"),
    ("CONTAINER_DEPLOYMENT", "vmware"), ("AUTO_CLEANUP", "perhaps"), ("WORKERS", "0"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        parse_settings({name: value})


def test_workers_is_honoured_without_redis():
    assert parse_settings({"WORKERS": "4", "REDIS_ENABLED": "false"}).WORKERS == 4


def test_config_file_overrides_environment_and_dotenv_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORT=1111\nPOOL_SIZE=3\n")
    (tmp_path / "custom.env").write_text("POOL_SIZE=5\n")
    s = load_settings(environ={"PORT": "2222", "POOL_SIZE": "4"})
    assert (s.PORT, s.POOL_SIZE) == (2222, 4)
    s = load_settings(str(tmp_path / "custom.env"), environ={"POOL_SIZE": "4"})
    assert s.POOL_SIZE == 5
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(str(tmp_path / "missing.env"), environ={})


def test_redis_url_from_parts():
    s = parse_settings({"REDIS_SERVER": "r", "REDIS_PORT": "7", "REDIS_DB": "2",
                        "REDIS_USER": "u", "REDIS_PASSWORD": "p"})
    assert s.redis_url == "redis://u:p@r:7/2"


def test_every_setting_is_documented():
    for name, _default, doc, _fleet in describe():
        assert doc, name


def test_readme_lists_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, _default, _doc, _fleet in describe():
        group = name.startswith(("AGENT_RUN_", "FC_")) and ("`AGENT_RUN_*`" in readme)
        assert group or f"`{name}`" in readme, f"{name} is missing from the README's settings table"
