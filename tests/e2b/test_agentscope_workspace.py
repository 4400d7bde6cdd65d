"""AgentScope 2.0's E2B workspace (PyPI ``agentscope``, ``agentscope.workspace._e2b``), unchanged,
against a fleet: the calls it makes are create (template, timeout, metadata, envs), list by
metadata and state, connect (which resumes), is_running, commands.run with cwd and timeout,
files read and write of bytes, and pause.

Its first start provisions the sandbox with ``sudo apt-get`` and uv from astral.sh, which no
sandbox here can reach: that step fails, and the test then puts a stand-in gateway
(tests/doubles/workspace_gateway_for_tests.py) where the bootstrap would have installed the real
one, as a template with the gateway baked in would hold it. Everything else is the workspace's own
code path: a second workspace with the same id finds the sandbox by metadata, connects, launches
the gateway, and works in it; closing pauses it; a third resumes it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

e2b = pytest.importorskip("e2b")
workspace_e2b = pytest.importorskip("agentscope.workspace._e2b")

from agentscope.workspace._e2b._constants import (  # noqa: E402
    GATEWAY_HOME,
    METADATA_WORKSPACE_ID_KEY,
    SANDBOX_WORKDIR,
)
from agentscope.workspace._utils import DEFAULT_GATEWAY_SCRIPT, DEFAULT_GATEWAY_VENV  # noqa: E402

GATEWAY = Path(__file__).resolve().parents[1] / "doubles" / "workspace_gateway_for_tests.py"


def _sandboxes_of(workspace_id: str) -> list:
    query = e2b.SandboxQuery(metadata={METADATA_WORKSPACE_ID_KEY: workspace_id})
    return e2b.Sandbox.list(query=query).next_items()


def _seed_gateway(sandbox) -> None:
    """What the bootstrap leaves: a venv python and the gateway script (ours stands in)."""
    venv_bin = f"{GATEWAY_HOME}/{DEFAULT_GATEWAY_VENV}/bin"
    sandbox.commands.run(f"mkdir -p {venv_bin} && ln -sf /usr/bin/python3 {venv_bin}/python")
    sandbox.files.write(f"{GATEWAY_HOME}/{DEFAULT_GATEWAY_SCRIPT}", GATEWAY.read_bytes())


def test_agentscope_e2b_workspace_round_trip(e2b_fleet):
    workspace_id = f"ws-{uuid.uuid4().hex[:12]}"
    E2BWorkspace = workspace_e2b.E2BWorkspace

    async def first_start() -> None:
        workspace = E2BWorkspace(workspace_id=workspace_id, env={"WS_MARK": "marked"},
                                 sandbox_metadata={"owner": "tests"}, timeout_seconds=600)
        with pytest.raises(RuntimeError, match="bootstrap failed"):
            await workspace.initialize()

    async def work_in_it() -> str:
        workspace = E2BWorkspace(workspace_id=workspace_id)
        await workspace.initialize()
        backend = workspace.get_backend()
        await backend.write_file(f"{SANDBOX_WORKDIR}/notes/a.txt", b"hello \xe2\x9c\x93")
        assert await backend.read_file(f"{SANDBOX_WORKDIR}/notes/a.txt") == b"hello \xe2\x9c\x93"
        result = await backend.exec_shell(["sh", "-c", "pwd; cat notes/a.txt; echo $WS_MARK; "
                                           "echo oops >&2; exit 3"], timeout=60)
        assert (result.exit_code, result.stderr) == (3, b"oops\n")
        assert result.stdout == f"{SANDBOX_WORKDIR}\nhello \u2713marked\n".encode()
        assert await backend.file_exists(f"{SANDBOX_WORKDIR}/notes/a.txt")
        assert "a.txt" in await backend.list_dir(f"{SANDBOX_WORKDIR}/notes")
        with pytest.raises(FileNotFoundError):
            await backend.read_file(f"{SANDBOX_WORKDIR}/missing.txt")
        slow = await backend.exec_shell(["sleep", "30"], timeout=1)
        assert slow.exit_code != 0  # the SDK's timeout ended the call
        assert [t.name for t in await workspace.list_tools()]
        sandbox_id = workspace.sandbox_id
        await workspace.close()  # pauses, keeping the files
        return sandbox_id

    async def resume_it() -> str:
        workspace = E2BWorkspace(workspace_id=workspace_id)
        await workspace.initialize()
        data = await workspace.get_backend().read_file(f"{SANDBOX_WORKDIR}/notes/a.txt")
        await workspace.close()
        return data.decode()

    try:
        asyncio.run(first_start())
        [created] = _sandboxes_of(workspace_id)
        sandbox = e2b.Sandbox.connect(created.sandbox_id)
        assert created.metadata == {METADATA_WORKSPACE_ID_KEY: workspace_id, "owner": "tests"}
        assert sandbox.commands.run("echo $WS_MARK").stdout == "marked\n"
        assert sandbox.files.exists(f"{SANDBOX_WORKDIR}/skills")  # the layout came first
        _seed_gateway(sandbox)
        assert asyncio.run(work_in_it()) == created.sandbox_id
        [paused] = _sandboxes_of(workspace_id)
        assert paused.state == e2b.SandboxState.PAUSED
        assert asyncio.run(resume_it()) == "hello \u2713"
        assert _sandboxes_of(workspace_id)[0].state == e2b.SandboxState.PAUSED
    finally:
        for found in _sandboxes_of(workspace_id):
            e2b.Sandbox.kill(found.sandbox_id)
