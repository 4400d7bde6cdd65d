"""The unmodified e2b SDK's pty, streamed stdin, watch_dir and get_metrics against a whole fleet
(Docker here; tests/local/test_e2b_local.py runs the same functions on local processes). Paths
are under a fresh /tmp folder, so the tests hold wherever a sandbox's files live."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from sandbox_core import polling

pytestmark = pytest.mark.docker

e2b = pytest.importorskip("e2b")


@pytest.fixture
def sandbox(e2b_fleet):
    sb = e2b.Sandbox.create()
    yield sb
    sb.kill()


@pytest.fixture
def folder(sandbox):
    path = f"/tmp/e2b-{uuid.uuid4().hex[:10]}"
    sandbox.files.make_dir(path)
    yield path
    sandbox.commands.run(f"rm -rf {path}")


def test_pty_runs_an_interactive_shell_that_resizes(sandbox):
    """Each step waits for the answer to the one before, typed from the output callback."""
    handle = sandbox.pty.create(e2b.PtySize(rows=24, cols=80), envs={"PS1": "$ "}, timeout=60)
    pid, text = handle.pid, []
    steps = {
        "24 80": lambda: (sandbox.pty.resize(pid, e2b.PtySize(rows=50, cols=132)),
                          sandbox.pty.send_stdin(pid, b"stty size\n")),
        "50 132": lambda: sandbox.pty.send_stdin(pid, b"echo sleeping-$((0+1)); sleep 600\n"),
        # ^C stops the foreground job, not the shell (job control: the pty is its terminal);
        # sent alone, as the terminal flushes the input queued with it.
        "sleeping-1": lambda: (sandbox.pty.send_stdin(pid, b"\x03"),
                               sandbox.pty.send_stdin(pid, b"echo back-$((1+1))\n")),
        "back-2": lambda: sandbox.pty.send_stdin(pid, b"exit 0\n"),
    }

    def on_pty(data: bytes) -> None:
        text.append(data.decode(errors="replace"))
        for needle in list(steps):
            if needle in "".join(text):
                steps.pop(needle)()

    sandbox.pty.send_stdin(pid, b"tty; stty size\n")
    result = handle.wait(on_pty=on_pty)
    assert result.exit_code == 0 and not steps, "".join(text)
    assert "/dev/pts/" in "".join(text)


def test_pty_connect_stream_input_and_kill(sandbox):
    handle = sandbox.pty.create(e2b.PtySize(rows=24, cols=80), timeout=60)
    again = sandbox.pty.connect(handle.pid)  # a second reader, as after a dropped connection
    sandbox.pty.stream_input(handle.pid, ["echo one-$((0+1))\n", b"echo two-$((1+1))\n"])
    seen: list[str] = []
    killed: list[bool] = []

    def on_pty(data: bytes) -> None:
        # Output already on its way (the next prompt) still arrives after the kill: kill once.
        seen.append(data.decode(errors="replace"))
        if "two-2" in "".join(seen) and not killed:
            killed.append(sandbox.pty.kill(handle.pid))

    with pytest.raises(e2b.CommandExitException):
        again.wait(on_pty=on_pty)
    assert killed == [True]
    assert "one-1" in "".join(seen)
    with pytest.raises(e2b.CommandExitException):
        handle.wait()
    assert not sandbox.pty.kill(handle.pid)


def test_stdin_streams_chunk_by_chunk(sandbox, folder):
    """Each chunk reaches the process while the stream is still open: the generator yields
    the next one only once the process has written the last to a file."""
    last = f"{folder}/last"
    handle = sandbox.commands.run(f"while read -r l; do echo \"$l\" >> {last}; done; echo end",
                                  background=True, stdin=True)

    def lines():
        for n in range(3):
            yield f"line {n}\n"
            assert polling.poll(lambda n=n: _read(sandbox, last).endswith(f"line {n}\n"), 30)

    sandbox.commands.stream_input(handle.pid, lines())
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "end\n"
    assert _read(sandbox, last) == "line 0\nline 1\nline 2\n"
    with pytest.raises(e2b.SandboxException):
        sandbox.commands.stream_input(handle.pid, ["too late\n"])  # it ended


def _read(sandbox, path: str) -> str:
    return sandbox.files.read(path) if sandbox.files.exists(path) else ""


WANTED = {("create", "a.txt"), ("write", "a.txt"), ("chmod", "a.txt"), ("rename", "a.txt"),
          ("create", "b.txt"), ("remove", "b.txt"), ("create", "sub/deep.txt")}


def _change_things(sandbox, folder: str) -> None:
    sandbox.files.write(f"{folder}/a.txt", "one")
    sandbox.commands.run(f"chmod 600 {folder}/a.txt")
    sandbox.files.rename(f"{folder}/a.txt", f"{folder}/b.txt")
    sandbox.files.remove(f"{folder}/b.txt")
    sandbox.files.write(f"{folder}/sub/deep.txt", "x")


def test_watch_dir_with_the_sync_sdk(sandbox, folder):
    """The sync SDK's watcher is the unary CreateWatcher / GetWatcherEvents / RemoveWatcher."""
    sandbox.files.make_dir(f"{folder}/sub")
    watcher = sandbox.files.watch_dir(folder, recursive=True)
    _change_things(sandbox, folder)
    seen: set[tuple[str, str]] = set()

    def all_seen() -> bool:
        seen.update((e.type.value, e.name) for e in watcher.get_new_events())
        return seen >= WANTED

    assert polling.poll(all_seen, 30), seen
    watcher.stop()
    with pytest.raises(e2b.SandboxException):
        watcher.get_new_events()
    with pytest.raises(e2b.NotFoundException):
        sandbox.files.watch_dir(f"{folder}/missing")


def test_watch_dir_with_the_async_sdk(e2b_fleet, sandbox, folder):
    """The async SDK's watcher is the WatchDir server stream; stop() ends the relay."""
    sandbox.files.make_dir(f"{folder}/sub")

    async def main() -> set[tuple[str, str]]:
        sb = await e2b.AsyncSandbox.connect(sandbox.sandbox_id)
        seen: set[tuple[str, str]] = set()
        done = asyncio.Event()

        def on_event(event) -> None:
            seen.add((event.type.value, event.name))
            if seen >= WANTED:
                done.set()

        handle = await sb.files.watch_dir(folder, on_event, recursive=True, timeout=120)
        await asyncio.to_thread(_change_things, sandbox, folder)
        try:
            await asyncio.wait_for(done.wait(), 30)
            assert _inotify_fds(sandbox) in (1, None)
        finally:
            await handle.stop()
        return seen

    assert asyncio.run(main()) >= WANTED
    # The client went away: the relay stops and removes the stream's watcher.
    assert polling.poll(lambda: _inotify_fds(sandbox) in (0, None), 60, first=0.5, most=1)


def _inotify_fds(sandbox) -> int | None:
    """inotify descriptors the sandbox's agent holds (a command's parent is the agent); None
    where they cannot be read: in an image the agent makes itself non-dumpable, so only the
    local-process run (tests/local/test_e2b_local.py) sees them."""
    listing = sandbox.commands.run("readlink /proc/$PPID/fd/0 >/dev/null 2>&1 && "
                                   "ls -l /proc/$PPID/fd || true").stdout
    return listing.count("anon_inode:inotify") if listing else None


def test_get_metrics_reads_the_sandbox(sandbox):
    sandbox.commands.run("timeout 20 sh -c 'while :; do :; done'", background=True)
    busy = polling.poll(lambda: [m for m in sandbox.get_metrics() if m.cpu_used_pct > 5], 30,
                        first=0.5, most=1)
    assert busy, "a busy loop never showed as CPU use"
    sample = busy[0]
    assert sample.cpu_count >= 1 and 0 < sample.mem_used <= sample.mem_total
    assert 0 < sample.disk_used <= sample.disk_total and sample.timestamp.tzinfo is not None
    again = e2b.Sandbox.get_metrics(sandbox.sandbox_id)
    assert len(again) == 1 and again[0].timestamp >= sample.timestamp
    with pytest.raises(e2b.NotFoundException):
        e2b.Sandbox.get_metrics("no-such-sandbox")


def test_metrics_of_a_paused_sandbox_are_empty(e2b_fleet, sandbox):
    import requests

    sandbox.pause()
    assert sandbox.get_metrics() == []
    many = requests.get(f"{e2b_fleet.url}/sandboxes/metrics",
                        params={"sandbox_ids": f"{sandbox.sandbox_id},nope"},
                        headers={"X-API-KEY": os.environ["E2B_API_KEY"]}, timeout=30)
    assert many.status_code == 200 and many.json() == {"sandboxes": {}}
    resumed = e2b.Sandbox.connect(sandbox.sandbox_id)
    many = requests.get(f"{e2b_fleet.url}/sandboxes/metrics",
                        params={"sandbox_ids": resumed.sandbox_id},
                        headers={"X-API-KEY": os.environ["E2B_API_KEY"]}, timeout=30).json()
    assert many["sandboxes"][resumed.sandbox_id]["memTotal"] > 0
