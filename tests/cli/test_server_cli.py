"""runtime-sandbox-server refuses bad settings before it starts anything."""

import subprocess
import sys

import pytest


def run_server(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, "-m", "sandbox_cli.server", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("line,expected", [
    ("POOL_SIZE=lots", "POOL_SIZE='lots' is not valid"),
    ("PORT_RANGE=[9,1]", "PORT_RANGE"),
    ("CONTAINER_DEPLOYMENT=fc", "CONTAINER_DEPLOYMENT=fc needs FC_ACCOUNT_ID"),
    ("CONTAINER_DEPLOYMENT=agentrun", "CONTAINER_DEPLOYMENT=agentrun needs AGENT_RUN_ACCESS_KEY_ID"),
    ("CONTAINER_DEPLOYMENT=cloud", "CONTAINER_DEPLOYMENT=cloud"),
    ("DEFAULT_SANDBOX_TYPE=base,nonesuch", "DEFAULT_SANDBOX_TYPE: unknown sandbox_type 'nonesuch'"),
])
def test_bad_settings_stop_startup_with_a_clear_message(tmp_path, line, expected):
    config = tmp_path / "bad.env"
    config.write_text(line + "\n")
    result = run_server(tmp_path, "--config", str(config))
    assert result.returncode != 0
    assert expected in result.stderr


def test_missing_config_file_and_extension(tmp_path):
    result = run_server(tmp_path, "--config", "nope.env")
    assert result.returncode != 0 and "no such file" in result.stderr
    result = run_server(tmp_path, "--extension", "no_such_extension_module")
    assert result.returncode != 0 and "no_such_extension_module" in result.stderr


def test_dotenv_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text("MAX_SANDBOX_INSTANCES=-3\n")
    result = run_server(tmp_path)
    assert result.returncode != 0 and "MAX_SANDBOX_INSTANCES" in result.stderr
