"""runtime-sandbox-server's process tree: no part outlives it (even after SIGKILL), SIGTERM stops
every part and leaves no container, and a start that cannot work fails at once with exit code 1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.localfleet import free_port

SERVER = [sys.executable, "-m", "sandbox_cli.server"]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids still alive (zombies count as gone: they run nothing)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while running(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running(pids)


@pytest.mark.docker
@pytest.mark.slow
def test_sigkill_of_the_server_leaves_no_process(make_fleet, docker_client):
    fleet = make_fleet()
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 1, 60,
                   "a warm sandbox")
    tree = descendants(fleet.proc.pid)
    # redis, two workers, beat, gunicorn's master and its worker
    assert len(tree) >= 6, tree
    fleet.proc.kill()
    fleet.proc.wait()
    left = wait_gone(tree, 15)
    assert not left, {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left}
    left_behind = {c.name for c in fleet.containers(docker_client)}
    assert left_behind  # no cleanup ran
    # A new server starts at once on the same port; its host remembers the store it knew, so it
    # adopts what was left (a client's sandbox lives on), and its stop releases them.
    try:
        fleet.start()
        fleet.wait_for(lambda: all(fleet.post("get_info", {"identity": name}).status_code == 200
                                   for name in left_behind), 60, "the next start's adoption")
        assert fleet.stop() == 0
        assert not left_behind & {c.name for c in fleet.containers(docker_client)}
    finally:
        unmount_workspaces(fleet.config.parent / "mounts")


def unmount_workspaces(folder: Path) -> None:
    """Workspace quota mounts (FLEET_WORKSPACE_QUOTA) of sandboxes whose teardown never ran
    (reconcile removes their containers, knowing no record): not left on the machine."""
    if not folder.is_dir():
        return
    for workspace in folder.iterdir():
        if os.path.ismount(workspace):
            print(f"unmounting a workspace left mounted: {workspace}")
            subprocess.run(["umount", "-l", str(workspace)], check=False)


@pytest.mark.docker
@pytest.mark.slow
def test_sigterm_with_live_sandboxes_stops_every_part(make_fleet, docker_client):
    fleet = make_fleet()
    names = [fleet.data("create", {"sandbox_type": "base"}, allow_null=False) for _ in range(2)]
    session = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "s1"}},
                         allow_null=False)
    result = fleet.data("call_tool", {"identity": session, "tool_name": "run_shell_command",
                                      "arguments": {"command": "echo hi > /workspace/f"}})
    assert result["isError"] is False
    assert len(fleet.containers(docker_client)) >= len(names) + 1
    tree = descendants(fleet.proc.pid)
    started = time.monotonic()
    assert fleet.stop(timeout=60) == 0
    print(f"SIGTERM stop with {len(names) + 1} live sandboxes took "
          f"{time.monotonic() - started:.1f}s")
    assert not wait_gone(tree, 5)
    assert not fleet.containers(docker_client)
    assert "stopped in" in fleet.tail()


def test_port_taken_fails_at_once(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        (tmp_path / "fleet.env").write_text(f"PORT={port}\n")
        result = subprocess.run([*SERVER, "--config", "fleet.env"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "starting" not in result.stderr  # nothing was started


def test_private_redis_that_cannot_start_fails_with_its_message(tmp_path):
    """A redis-server that cannot take its socket (here one that says so and exits)."""
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Could not create server unix socket: Address already in "
                    "use' >&2\nexit 1\n")
    fake.chmod(0o755)
    (tmp_path / "fleet.env").write_text(f"PORT={free_port()}\nREDIS_ENABLED=false\n")
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("REDIS_URL", None)
    result = subprocess.run([*SERVER, "--config", "fleet.env"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "the private redis-server exited with code 1" in result.stderr, result.stderr
    assert "Address already in use" in result.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_a_part_that_keeps_crashing_ends_the_server_with_its_error(tmp_path, docker_client):
    """beat dies at every start (an extension that fails in beat only): the server exits 1 with
    beat's last lines, and leaves no process behind."""
    extension = tmp_path / "beat_breaker.py"
    extension.write_text("import sys\nif 'beat' in sys.argv:\n"
                         "    raise RuntimeError('beat-breaker: this beat cannot start')\n")
    (tmp_path / "fleet.env").write_text(
        f"PORT={free_port()}\nPOOL_SIZE=0\nFLEET_HOST_NAME=crash-{os.getpid()}\n"
        f"CONTAINER_PREFIX_KEY=sfcrash_{os.getpid()}_\n")
    proc = subprocess.Popen([*SERVER, "--config", "fleet.env", "--extension", str(extension)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert proc.returncode == 1, out[-3000:]
    assert "beat exited with code" in out or "beat keeps dying" in out, out[-3000:]
    assert "beat-breaker: this beat cannot start" in out.split("Its last lines:")[-1]


@pytest.mark.docker
@pytest.mark.slow
def test_a_part_killed_again_and_again_is_restarted_then_ends_the_server(make_fleet, docker_client):
    """A part that dies is restarted; the sixth death within a minute stops the fleet (exit 1),
    saying which part and what it last wrote."""
    fleet = make_fleet(POOL_SIZE=0)
    tree = descendants(fleet.proc.pid)
    for round_ in range(6):
        beat = fleet.wait_for(lambda: fleet.pids("sandbox_workers beat"), 30, "beat running")
        os.kill(beat[0], signal.SIGKILL)
        if round_ < 5:
            fleet.wait_for(lambda b=beat[0]: fleet.pids("sandbox_workers beat")
                           and fleet.pids("sandbox_workers beat") != [b], 30, "beat restarted")
    assert fleet.proc.wait(60) == 1
    out = fleet.tail(20000)
    assert "beat exited with code -9; restarting it" in out
    assert "beat keeps dying (exit code -9, 6 times in a minute); stopping the fleet" in out
    assert not wait_gone(tree | descendants(fleet.proc.pid), 10)
    assert not fleet.containers(docker_client)
