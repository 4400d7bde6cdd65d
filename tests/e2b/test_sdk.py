"""The unmodified e2b and e2b-code-interpreter SDKs against a whole fleet (real Redis, Docker,
containers): the issue's user example, commands, files, code, pause/resume, errors, cleanup."""

from __future__ import annotations

import asyncio
import io
import os
import threading

import pytest

pytestmark = pytest.mark.docker

e2b = pytest.importorskip("e2b")
code_interpreter = pytest.importorskip("e2b_code_interpreter")


def live_names(fleet, docker_client) -> set[str]:
    return {c.name for c in fleet.containers(docker_client)}


def test_user_example(e2b_fleet, docker_client, tmp_path):
    """The issue's example, unchanged but for the file it writes."""
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    sb = code_interpreter.Sandbox.create(envs={"GREETING": "hi"}, metadata={"user": "ada"},
                                         timeout=300)
    lines = []
    result = sb.commands.run("echo $GREETING; sleep 1; echo done", on_stdout=lines.append)
    assert lines == ["hi\n", "done\n"] and result.exit_code == 0
    with open(data, "rb") as f:
        sb.files.write("/home/user/data.csv", f)
    assert sb.files.read("/home/user/data.csv") == "a,b\n1,2\n"
    assert sb.run_code("import pandas as pd; pd.Series([6]).mul(7)[0]").text == "42"
    png = sb.run_code("import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.show()").results[0].png
    assert png and png.startswith("iVBORw0KGgo")  # base64 of the PNG signature
    sb.pause()
    sb = code_interpreter.Sandbox.connect(sb.sandbox_id)
    assert sb.files.read("/home/user/data.csv") == "a,b\n1,2\n"
    name = e2b_fleet.prefix + sb.sandbox_id
    assert name in live_names(e2b_fleet, docker_client)
    assert sb.kill()
    e2b_fleet.wait_for(lambda: name not in live_names(e2b_fleet, docker_client),
                       what="the killed sandbox's container to go")


def test_output_streams_while_the_command_runs(e2b_fleet):
    """The first line arrives while the command still waits: it only ends once the callback
    for that line has written the file it waits for."""
    sb = e2b.Sandbox.create()
    try:
        def on_stdout(line: str) -> None:
            if line == "first\n":
                sb.files.write("/tmp/go", "")

        result = sb.commands.run("echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo done",
                                 on_stdout=on_stdout, timeout=60)
        assert result.stdout == "first\ndone\n"
    finally:
        sb.kill()


def test_exit_codes_background_and_reattach(e2b_fleet):
    sb = e2b.Sandbox.create()
    try:
        with pytest.raises(e2b.CommandExitException) as failed:
            sb.commands.run("echo out; echo err >&2; exit 3")
        assert (failed.value.exit_code, failed.value.stdout, failed.value.stderr) == (3, "out\n", "err\n")
        handle = sb.commands.run("trap '' TERM; echo started; sleep 600", background=True)
        assert handle.pid in [p.pid for p in sb.commands.list()]
        # A second client (as after a dropped connection) reattaches to the running process.
        other = e2b.Sandbox.connect(sb.sandbox_id)
        again = other.commands.connect(handle.pid)
        assert other.commands.kill(handle.pid)  # SIGKILL: a TERM-ignoring process ends too
        with pytest.raises(e2b.CommandExitException):
            again.wait()
        assert handle.pid not in [p.pid for p in sb.commands.list()]
        assert not sb.commands.kill(handle.pid)  # gone: False, as E2B answers
        # Quiet for longer than the keepalive interval: the SDK reads the keepalives and waits.
        assert sb.commands.run("sleep 11; echo late", timeout=30).stdout == "late\n"
        waited = sb.commands.run("sleep 0.2; echo bg", background=True)
        assert waited.wait().stdout == "bg\n"
        assert sb.commands.run("pwd; whoami >/dev/null; echo $HOME").stdout == "/home/user\n/home/user\n"
    finally:
        sb.kill()


def test_files(e2b_fleet):
    sb = e2b.Sandbox.create()
    try:
        sb.files.write("notes/hello.txt", "héllo")  # relative: the user's home
        assert sb.files.read("/home/user/notes/hello.txt") == "héllo"
        blob = os.urandom(9 << 20)  # more than two transfer chunks
        sb.files.write("/tmp/blob.bin", io.BytesIO(blob))
        assert sb.files.read("/tmp/blob.bin", format="bytes") == blob
        assert b"".join(sb.files.read("/tmp/blob.bin", format="stream")) == blob
        sb.files.write("/tmp/small.gz.txt", "zipped", gzip=True)
        assert sb.files.read("/tmp/small.gz.txt") == "zipped"
        assert sb.files.exists("notes/hello.txt") and not sb.files.exists("notes/nope")
        assert sb.files.make_dir("/tmp/d/e") and not sb.files.make_dir("/tmp/d/e")
        entries = sb.files.list("/home/user/notes")
        assert [(e.name, e.type.value, e.size) for e in entries] == [("hello.txt", "file", 6)]
        moved = sb.files.rename("/home/user/notes/hello.txt", "/tmp/d/hello.txt")
        assert moved.path == "/tmp/d/hello.txt"
        assert sb.files.get_info("/tmp/d").type.value == "dir"
        sb.files.remove("/tmp/d")
        assert not sb.files.exists("/tmp/d/hello.txt")
        with pytest.raises(e2b.NotFoundException):
            sb.files.read("/tmp/d/hello.txt")
    finally:
        sb.kill()


def test_run_code_state_errors_and_contexts(e2b_fleet):
    sb = code_interpreter.Sandbox.create()
    try:
        sb.run_code("x = 6 * 7")
        execution = sb.run_code("print(x); x")
        assert execution.logs.stdout == ["42\n"] and execution.text == "42"
        error = sb.run_code("1 / 0").error
        assert (error.name, error.value) == ("ZeroDivisionError", "division by zero")
        context = sb.create_code_context()
        assert sb.run_code("'x' in globals()", context=context).text == "False"
        assert context.id in [c.id for c in sb.list_code_contexts()]
        sb.remove_code_context(context)
        assert sb.run_code("x").text == "42"  # the default context kept its state

        def on_stdout(message) -> None:  # the cell waits for what this callback writes
            if message.line == "first\n":
                sb.files.write("/tmp/go-cell", "")

        streamed = sb.run_code("import os, time\nprint('first')\n"
                               "while not os.path.exists('/tmp/go-cell'): time.sleep(0.05)\n"
                               "print('done')", on_stdout=on_stdout, timeout=60)
        assert streamed.logs.stdout == ["first\n", "done\n"]
        with pytest.raises(code_interpreter.NotFoundException if hasattr(
                code_interpreter, "NotFoundException") else e2b.NotFoundException):
            sb.run_code("1", context=context)  # removed
    finally:
        sb.kill()


def test_list_get_timeout_and_errors(e2b_fleet, docker_client):
    tag = os.urandom(4).hex()
    a = e2b.Sandbox.create(metadata={"tag": tag, "n": "1"})
    b = e2b.Sandbox.create(metadata={"tag": tag, "n": "2"})
    try:
        query = e2b.SandboxQuery(metadata={"tag": tag})
        found = e2b.Sandbox.list(query=query).next_items()
        assert {s.sandbox_id for s in found} == {a.sandbox_id, b.sandbox_id}
        one = e2b.Sandbox.list(query=e2b.SandboxQuery(metadata={"tag": tag, "n": "2"})).next_items()
        assert [s.sandbox_id for s in one] == [b.sandbox_id]
        paged = e2b.Sandbox.list(query=query, limit=1)
        pages = [paged.next_items(), paged.next_items()]
        assert [len(p) for p in pages] == [1, 1] and not paged.has_next
        assert a.get_info().metadata == {"tag": tag, "n": "1"} and a.is_running()
        a.set_timeout(1)  # the reaper ends it at its new time to live
        name = e2b_fleet.prefix + a.sandbox_id
        e2b_fleet.wait_for(lambda: name not in live_names(e2b_fleet, docker_client), timeout=60,
                           what="the sandbox to be reaped at its timeout")
        assert not a.is_running()
        assert not e2b.Sandbox.kill(a.sandbox_id)  # unknown now: False
    finally:
        b.kill()
    with pytest.raises(e2b.NotFoundException):
        e2b.Sandbox.connect("no-such-sandbox")
    with pytest.raises(e2b.SandboxException, match="unknown template 'no-such-template'"):
        e2b.Sandbox.create(template="no-such-template")
    with pytest.raises(e2b.AuthenticationException):
        e2b.Sandbox.create(api_key="wrong-key")


def test_async_sdk(e2b_fleet):
    async def main() -> None:
        sb = await e2b.AsyncSandbox.create()
        try:
            result = await sb.commands.run("echo async")
            assert result.stdout == "async\n"
            await sb.files.write("/tmp/a.txt", "x")
            assert await sb.files.read("/tmp/a.txt") == "x"
        finally:
            await sb.kill()

    asyncio.run(main())


def test_envd_token_opens_only_its_sandbox(e2b_fleet):
    import requests

    a, b = e2b.Sandbox.create(), e2b.Sandbox.create()
    try:
        headers = {"E2b-Sandbox-Id": b.sandbox_id, "E2b-Sandbox-Port": "49983",
                   "X-Access-Token": a._envd_access_token}
        r = requests.get(f"{e2b_fleet.url}/files", params={"path": "/etc/hostname"},
                         headers=headers, timeout=30)
        assert r.status_code == 401 and r.json()["code"] == 401
    finally:
        a.kill()
        b.kill()
    threading.enumerate()  # nothing of the SDK's may be left blocking


def test_pause_keeps_files_and_processes(e2b_fleet, docker_client):
    sb = e2b.Sandbox.create(timeout=120)
    try:
        sb.files.write("/home/user/kept.txt", "kept")
        handle = sb.commands.run("i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
                                 background=True)
        sb.pause()
        states = {s.sandbox_id: s.state.value for s in
                  e2b.Sandbox.list(query=e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED])).next_items()}
        assert states.get(sb.sandbox_id) == "paused"
        assert not sb.is_running()
        resumed = e2b.Sandbox.connect(sb.sandbox_id)
        assert resumed.files.read("/home/user/kept.txt") == "kept"
        assert handle.pid in [p.pid for p in resumed.commands.list()]
        first = int(resumed.files.read("/tmp/count"))
        e2b_fleet.wait_for(lambda: int(resumed.files.read("/tmp/count")) > first,
                           what="the background process to run on after the resume")
        resumed.pause()  # a paused sandbox is killed like any other
    finally:
        assert sb.kill()
    name = e2b_fleet.prefix + sb.sandbox_id
    e2b_fleet.wait_for(lambda: name not in live_names(e2b_fleet, docker_client),
                       what="the killed paused sandbox's container to go")


def test_info_and_metrics_agree_on_the_containers_limits(e2b_fleet):
    """get_metrics reads the container's own cgroup: its total is the sandbox's limit (the base
    type's default 1 GiB and 1 CPU), the figures get_info gives."""
    sb = e2b.Sandbox.create()
    try:
        info, [sample] = sb.get_info(), sb.get_metrics()
        assert (info.memory_mb, info.cpu_count) == (1024, 1)
        assert (sample.mem_total, sample.cpu_count) == (1 << 30, 1)
    finally:
        sb.kill()
