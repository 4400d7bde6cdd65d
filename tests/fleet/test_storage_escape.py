"""A sandbox cannot reach a host file through a link copied to or from STORAGE_FOLDER.

The reproduced attack: session 1 leaves ``/workspace/sub -> <host folder>``, its copy-back stored
the link, and session 2's copy-back of a real ``sub/`` walked into the stored link and wrote into
the host folder as root. Here, on a real fleet: links are dropped on the way to storage, a link
already waiting in storage (as the old copy-back left them) is replaced and never followed, the
same one folder deeper and across a recycle and restore, and the fleet keeps serving.
"""

import os

import pytest

from tests.conftest import running_fleet

pytestmark = pytest.mark.docker

SESSION_TIMEOUT = 3


@pytest.fixture(scope="module")
def storage_fleet(tmp_path_factory, docker_client):
    tmp = tmp_path_factory.mktemp("storage_escape")
    storage, canary = tmp / "storage", tmp / "canary"
    storage.mkdir()
    canary.mkdir()
    (canary / "keep").write_text("host file")
    with running_fleet(tmp / "fleet", docker_client, POOL_SIZE=1, STORAGE_FOLDER=str(storage),
                       HEARTBEAT_TIMEOUT=SESSION_TIMEOUT, WATCHER_SCAN_INTERVAL=1) as fleet:
        fleet.storage, fleet.canary = storage, canary
        yield fleet


@pytest.fixture
def fleet(storage_fleet):
    yield storage_fleet
    assert sorted(os.listdir(storage_fleet.canary)) == ["keep"], "a sandbox wrote on the host"
    assert (storage_fleet.canary / "keep").read_text() == "host file"
    name = storage_fleet.data("create", {"sandbox_type": "base"})  # and the fleet still serves
    assert shell(storage_fleet, name, "echo fine") == "fine\n"
    storage_fleet.data("release", {"identity": name})


def shell(fleet, name: str, command: str) -> str:
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": command}})
    out = [c["text"] for c in result["content"] if c.get("description") == "stdout"]
    return "".join(out)


def logged(fleet, text: str) -> bool:
    return text in fleet.log.read_text(errors="replace")


def release_and_wait(fleet, name: str) -> None:
    """Release and wait for the teardown, which copies back before it logs ``torn down``."""
    assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: logged(fleet, f"sandbox {name}: torn down"), what=f"{name} torn down")


@pytest.mark.parametrize("where", ["sub", "a/sub"])
def test_a_link_never_reaches_storage_and_a_stored_one_is_not_followed(fleet, where):
    path = f"victim-{where.replace('/', '-')}"
    first = fleet.data("create", {"sandbox_type": "base", "storage_path": path})
    shell(fleet, first, f"mkdir -p /workspace/a && ln -s {fleet.canary} /workspace/{where}")
    release_and_wait(fleet, first)
    stored = fleet.storage / path
    assert stored.is_dir() and not os.path.lexists(stored / where)
    assert logged(fleet, f"sandbox {first}: workspace copied to {stored}: 0 files, 1 skipped (1 link)")

    os.symlink(fleet.canary, stored / where)  # what the copy-back before this fix stored
    second = fleet.data("create", {"sandbox_type": "base", "storage_path": path})
    assert shell(fleet, second, f"test -e /workspace/{where} -o -L /workspace/{where} || echo absent") \
        == "absent\n"  # a stored link is not handed to the next sandbox
    shell(fleet, second, f"mkdir -p /workspace/{where} && echo x > /workspace/{where}/planted")
    release_and_wait(fleet, second)
    assert not (stored / where).is_symlink()
    assert (stored / where / "planted").read_text() == "x\n"


def test_a_link_across_a_recycle_and_restore_is_not_followed(fleet, docker_client):
    meta = {"session_ctx_id": "storage-escape-recycle"}
    old = fleet.data("create", {"sandbox_type": "base", "storage_path": "recycled", "meta": meta})
    shell(fleet, old, f"ln -s {fleet.canary} /workspace/sub")
    fleet.wait_for(lambda: logged(fleet, f"sandbox {old}: torn down (workspace kept)"),
                   timeout=SESSION_TIMEOUT * 10, what="the idle session recycled")
    stored = fleet.storage / "recycled"
    assert not os.path.lexists(stored / "sub")
    os.symlink(fleet.canary, stored / "sub")  # as the copy-back before this fix left it

    # The next call restores the session with its workspace, link included (it is the sandbox's
    # own, and harmless inside it); the sandbox then swaps it for a real folder.
    shell(fleet, old, "rm /workspace/sub && mkdir /workspace/sub && echo x > /workspace/sub/planted")
    latest = fleet.data("get_info", {"identity": old})["container_name"]
    assert latest != old
    release_and_wait(fleet, latest)
    assert (stored / "sub" / "planted").read_text() == "x\n"
    assert not (stored / "sub").is_symlink()


def warm_one(fleet, docker_client, but: str = "") -> str:
    def warm():
        return [c.name for c in fleet.containers(docker_client) if c.name != but and
                fleet.data("get_info", {"identity": c.name})["state"] == "warm"]
    return fleet.wait_for(warm, what="a warm sandbox")[0]


def test_pool_sandboxes_get_a_storage_folder_only_when_claimed(fleet, docker_client):
    unused = warm_one(fleet, docker_client)
    release_and_wait(fleet, unused)
    assert not (fleet.storage / unused.removeprefix(fleet.prefix)).exists()

    pooled = warm_one(fleet, docker_client, but=unused)
    claimed = fleet.data("create_from_pool", {"sandbox_type": "base", "meta": {}})
    assert claimed == pooled
    info = fleet.data("get_info", {"identity": claimed})
    assert info["storage_path"] == str(fleet.storage / info["session_id"])
    shell(fleet, claimed, "echo used > /workspace/used.txt")
    release_and_wait(fleet, claimed)
    assert (fleet.storage / info["session_id"] / "used.txt").read_text() == "used\n"
