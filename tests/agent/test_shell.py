"""run_shell_command: upstream's result shapes, and a timeout that kills the whole process group."""

from __future__ import annotations

import os
import time

from .conftest import alive, texts


def test_stdout_and_returncode_shape_exactly(agent):
    assert agent.tool("run_shell_command", command="echo hi") == {
        "meta": None,
        "content": [
            {"type": "text", "text": "hi\n", "annotations": None, "description": "stdout"},
            {"type": "text", "text": "0", "annotations": None, "description": "returncode"},
        ],
        "isError": False,
    }


def test_stderr_item_goes_before_returncode_and_sets_is_error(agent):
    result = agent.tool("run_shell_command", command="echo out; echo err >&2; exit 3")
    assert [item["description"] for item in result["content"]] == ["stdout", "stderr", "returncode"]
    assert texts(result) == {"stdout": "out\n", "stderr": "err\n", "returncode": "3"}
    assert result["isError"] is True


def test_failing_exit_code_without_stderr_is_not_an_error(agent):
    result = agent.tool("run_shell_command", command="exit 7")
    assert texts(result) == {"stdout": "", "returncode": "7"}
    assert result["isError"] is False


def test_runs_in_the_workspace_with_bash_and_without_the_secret(agent):
    result = agent.tool(
        "run_shell_command", command='pwd; echo "${BASH_VERSION:+bash}"; echo "[$SECRET_TOKEN]"'
    )
    cwd, shell, secret = texts(result)["stdout"].splitlines()
    assert os.path.realpath(cwd) == os.path.realpath(agent.workspace)
    assert shell == "bash"
    assert secret == "[]"


def test_non_utf8_output_is_replaced_not_an_error(agent):
    result = agent.tool("run_shell_command", command=r"printf '\xff\xfeok'")
    assert texts(result)["stdout"].endswith("ok")


def test_timeout_kills_the_process_group(agent):
    pidfile = agent.workspace / "bg.pid"
    started = time.monotonic()
    result = agent.tool(
        "run_shell_command", timeout=1, command=f"sleep 30 & echo $! > {pidfile}; echo before; sleep 30"
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5
    out = texts(result)
    assert out["stdout"] == "before\n"
    assert out["stderr"] == "Command timed out after 1 seconds"
    assert out["returncode"] == "124"
    assert result["isError"] is True
    background = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(background), "the background job of a timed-out command survived"


def test_background_job_holding_the_pipe_is_bounded_by_the_timeout(agent):
    result = agent.tool("run_shell_command", command="(sleep 30 &) ; echo started", timeout=0.5)
    assert texts(result)["stdout"] == "started\n"
    assert texts(result)["returncode"] == "124"


def test_default_timeout_comes_from_tool_timeout_then_nginx_timeout(make_agent):
    agent = make_agent(NGINX_TIMEOUT="1")
    result = agent.tool("run_shell_command", command="sleep 10")
    assert texts(result)["stderr"] == "Command timed out after 1 seconds"
    agent = make_agent(NGINX_TIMEOUT="30", TOOL_TIMEOUT="0.5")
    result = agent.tool("run_shell_command", command="sleep 10")
    assert texts(result)["stderr"] == "Command timed out after 0.5 seconds"


def test_a_command_is_what_the_kernel_kills_first_and_bash_env_is_not_left_behind(agent):
    # bash reads oom_victim.sh through BASH_ENV: the score is raised without a /bin/sh in between,
    # and the command's own shells neither see BASH_ENV nor read the file again.
    result = agent.tool("run_shell_command",
                        command='cat /proc/self/oom_score_adj; echo "[$BASH_ENV]"; '
                                'bash -c \'cat /proc/$$/oom_score_adj; echo "[$BASH_ENV]"\'')
    assert texts(result)["stdout"].splitlines() == ["1000", "[]", "1000", "[]"]
