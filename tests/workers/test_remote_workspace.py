"""A workspace that is not a host folder goes to and from storage through the sandbox's agent
(sandbox_workers/remote_workspace.py), against a real agent process and a real STORAGE_FOLDER."""

import io
import os
import tarfile
from types import SimpleNamespace

import pytest

from sandbox_core.settings import parse_settings
from sandbox_workers import remote_workspace
from sandbox_workers.agent_client import AgentClient
from sandbox_workers.storage import LocalStorage
from tests.agent.conftest import TOKEN, Agent


@pytest.fixture
def setup(tmp_path):
    agent = Agent(tmp_path / "sandbox").start()
    storage = tmp_path / "storage"
    storage.mkdir()
    ctx = SimpleNamespace(
        settings=parse_settings({"DEFAULT_MOUNT_DIR": str(tmp_path / "mounts")}),
        agent=AgentClient(), storage=LocalStorage(str(storage)))
    record = {"container_name": "sb-1", "container_id": "c1", "port": agent.port,
              "agent_secret": TOKEN, "agent_url": None}
    yield agent, ctx, record, storage
    agent.stop()
    ctx.agent.close()


def test_a_workspace_goes_to_storage_and_comes_back(setup, tmp_path):
    agent, ctx, record, storage = setup
    ws = agent.workspace
    (ws / "notes").mkdir()
    (ws / "notes" / "a.txt").write_text("kept")
    (ws / "run.sh").write_text("echo hi")
    os.chmod(ws / "run.sh", 0o755)
    (ws / "link").symlink_to("/etc")  # never stored
    report = remote_workspace.save(ctx, record, str(storage / "s1"))
    assert report.files == 2
    assert (storage / "s1" / "notes" / "a.txt").read_text() == "kept"
    assert os.stat(storage / "s1" / "run.sh").st_mode & 0o777 == 0o755
    assert not os.path.lexists(storage / "s1" / "link")
    assert not [p for p in (tmp_path / "mounts").iterdir() if p.name.startswith(".transfer-")]

    fresh = Agent(tmp_path / "another").start()  # a new sandbox for the same storage path
    try:
        filled = remote_workspace.fill(ctx, {**record, "port": fresh.port}, str(storage / "s1"))
        assert filled.files == 2
        assert (fresh.workspace / "notes" / "a.txt").read_text() == "kept"
        assert os.stat(fresh.workspace / "run.sh").st_mode & 0o777 == 0o755
    finally:
        fresh.stop()


def test_a_hostile_archive_writes_nothing_outside_the_storage_path(setup, tmp_path, monkeypatch):
    """The archive comes from the sandbox: a link, a way up, an absolute name and a name that
    goes through a link are never followed on the host."""
    agent, ctx, record, storage = setup
    canary = tmp_path / "canary"
    canary.mkdir()
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        for name, kind in (("evil", tarfile.SYMTYPE), ("../up.txt", tarfile.REGTYPE),
                           ("/abs.txt", tarfile.REGTYPE), ("evil/x.txt", tarfile.REGTYPE),
                           ("ok.txt", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = str(canary)
                tar.addfile(info)
            else:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
    body.seek(0)

    class Hostile:
        status = 200

        def read(self, size=-1):
            return body.read(size)

        def release_conn(self):
            pass

    monkeypatch.setattr(ctx.agent, "open", lambda *a, **k: Hostile())
    report = remote_workspace.save(ctx, record, str(storage / "s2"))
    assert sorted(p.name for p in (storage / "s2").iterdir()) == ["abs.txt", "evil", "ok.txt"]
    assert (storage / "s2" / "evil").is_dir() and not (storage / "s2" / "evil").is_symlink()
    assert report.skipped["not a file or folder"] == 2  # the link and ../up.txt
    assert list(canary.iterdir()) == [] and not (tmp_path / "up.txt").exists()
