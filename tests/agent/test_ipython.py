"""run_ipython_cell: shared state, upstream's output shapes, timeouts that interrupt or restart."""

from __future__ import annotations

import threading

from .conftest import texts


def test_cells_share_state_and_echo_the_last_expression(agent):
    assert agent.tool("run_ipython_cell", code="shared = 41") == {
        "meta": None,
        "content": [{"type": "text", "text": "", "annotations": None, "description": "stdout"}],
        "isError": False,
    }
    result = agent.tool("run_ipython_cell", code="print(shared + 1)\nshared * 2")
    stdout = texts(result)["stdout"]
    assert stdout.startswith("42\n")
    assert "82" in stdout


def test_exception_is_a_traceback_in_stdout_and_not_an_error(agent):
    result = agent.tool("run_ipython_cell", code="1/0")
    assert [item["description"] for item in result["content"]] == ["stdout"]
    assert "ZeroDivisionError" in texts(result)["stdout"]
    assert result["isError"] is False


def test_stderr_sets_is_error(agent):
    result = agent.tool("run_ipython_cell", code="import sys; print('warn', file=sys.stderr)")
    assert texts(result) == {"stdout": "", "stderr": "warn\n"}
    assert result["isError"] is True


def test_subprocess_output_is_captured(agent):
    result = agent.tool("run_ipython_cell", code="import os; os.system('echo from-shell')")
    assert "from-shell" in texts(result)["stdout"]


def test_missing_code_is_400(agent):
    assert agent.post("tools/run_ipython_cell", {"code": ""}).status_code == 400
    assert agent.post("tools/run_ipython_cell", {}).status_code == 400


def test_concurrent_cells_are_serialised(agent):
    agent.tool("run_ipython_cell", code="import time\norder = []")
    code = "order.append('start'); time.sleep(0.3); order.append('end')"
    threads = [
        threading.Thread(target=agent.tool, args=("run_ipython_cell",), kwargs={"code": code})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = agent.tool("run_ipython_cell", code="print(order)")
    assert texts(result)["stdout"].strip() == str(["start", "end"] * 3)


def test_timeout_interrupts_and_keeps_state(make_agent):
    agent = make_agent()
    agent.tool("run_ipython_cell", code="kept = 'yes'")
    result = agent.tool("run_ipython_cell", code="import time; time.sleep(30)", timeout=0.5)
    out = texts(result)
    assert "KeyboardInterrupt" in out["stdout"]
    assert "timed out after 0.5 seconds" in out["stderr"]
    assert "state is kept" in out["stderr"]
    assert result["isError"] is True
    assert texts(agent.tool("run_ipython_cell", code="print(kept)"))["stdout"] == "yes\n"


def test_timeout_restarts_a_kernel_that_ignores_the_interrupt(make_agent):
    agent = make_agent()
    agent.tool("run_ipython_cell", code="lost = 1")
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    result = agent.tool("run_ipython_cell", code=stubborn, timeout=0.5)
    assert "state were lost" in texts(result)["stderr"]
    assert result["isError"] is True
    after = agent.tool("run_ipython_cell", code="print('lost' in globals())")
    assert texts(after)["stdout"] == "False\n"


def test_kernel_that_exits_is_replaced(make_agent):
    agent = make_agent()
    result = agent.tool("run_ipython_cell", code="import os; os._exit(3)")
    assert "exited unexpectedly (exit code 3)" in texts(result)["stderr"]
    assert texts(agent.tool("run_ipython_cell", code="print('back')"))["stdout"] == "back\n"


def test_plain_python_fallback_without_ipython(make_agent, tmp_path):
    # A sitecustomize that makes IPython unimportable in the kernel process.
    blocker = tmp_path / "no_ipython"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'IPython':\n            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, _Block())\n"
    )
    from .conftest import AGENT_DIR

    agent = make_agent(PYTHONPATH=f"{blocker}:{AGENT_DIR}")
    agent.tool("run_ipython_cell", code="x = 20")
    assert texts(agent.tool("run_ipython_cell", code="x + 1"))["stdout"] == "21\n"
    err = agent.tool("run_ipython_cell", code="undefined_name")
    assert "NameError" in texts(err)["stdout"]
    assert err["isError"] is False
