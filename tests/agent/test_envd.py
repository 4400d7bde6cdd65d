"""The agent's E2B envd routes that need no fleet: ptys, stdin, directory watchers, metrics
(the agent as a local process; sandbox_api/e2b relays these routes)."""

from __future__ import annotations

import base64
import os

from sandbox_core import polling

PTY = {"size": {"rows": 24, "cols": 80}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Output:
    """A process's output as the relay reads it: by cursor, long-polled."""

    def __init__(self, agent, pid: int) -> None:
        self.agent, self.pid, self.cursor, self.text, self.end = agent, pid, 0, "", None

    def read(self) -> None:
        got = self.agent.post("envd/process/read", {"process": {"pid": self.pid},
                                                    "cursor": self.cursor, "wait": 1}).json()
        self.cursor = got["cursor"]
        for event in got["events"]:
            for data in event["data"].values():
                self.text += base64.b64decode(data).decode(errors="replace")
        self.end = got["end"]

    def until(self, needle: str, timeout: float = 30) -> str:
        def seen() -> bool:
            self.read()
            return needle in self.text or self.end is not None

        polling.poll(seen, timeout, first=0, most=0)
        assert needle in self.text, f"{needle!r} not in {self.text!r} (end {self.end})"
        return self.text


def start_pty(agent, **extra) -> int:
    r = agent.post("envd/process/start", {"process": {"cmd": "/bin/bash", "args": ["-i", "-l"],
                                                      "envs": {"TERM": "xterm", "PS1": "$ "}},
                                          "pty": PTY, **extra})
    assert r.status_code == 200, r.text
    return r.json()["pid"]


def type_in(agent, pid: int, text: str) -> None:
    r = agent.post("envd/process/input", {"process": {"pid": pid}, "input": {"pty": b64(text)}})
    assert r.status_code == 200, r.text


def test_pty_is_a_controlling_terminal_that_resizes(agent):
    pid = start_pty(agent)
    out = Output(agent, pid)
    type_in(agent, pid, "tty; stty size; echo $((6*7))\n")
    assert "/dev/pts/" in out.until("\n42")
    assert "24 80" in out.text
    r = agent.post("envd/process/update", {"process": {"pid": pid},
                                           "pty": {"size": {"rows": 50, "cols": 132}}})
    assert r.status_code == 200, r.text
    type_in(agent, pid, "stty size\n")
    out.until("50 132")
    # ^C reaches the foreground job only: the shell lives on (job control needs the ctty).
    type_in(agent, pid, "sleep 600\n")
    # ^C typed before bash has made sleep the terminal's foreground job would reach bash instead
    assert polling.poll(lambda: _foreground(pid, b"sleep\x00600"), 30, first=0.01, most=0.05)
    type_in(agent, pid, "\x03")
    type_in(agent, pid, "echo back-$((1+1))\n")
    out.until("back-2")
    type_in(agent, pid, "exit 3\n")
    polling.poll(lambda: out.read() or out.end, 30, first=0, most=0)
    assert out.end == {"exitCode": 3, "exited": True, "status": "exit status 3"}


def _foreground(shell: int, cmdline: bytes) -> bool:
    """Whether a child of ``shell`` running ``cmdline`` is its terminal's foreground job."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                running = f.read()
        except OSError:
            continue
        if int(fields[1]) == shell and running.startswith(cmdline) and fields[2] == fields[5]:
            return True  # its process group is the terminal's (tpgid)
    return False


def test_pty_errors_and_kill(agent):
    bad = agent.post("envd/process/start", {"process": {"cmd": "/bin/bash"},
                                            "pty": {"size": {"rows": 0, "cols": 80}}})
    assert bad.status_code == 400 and "rows" in bad.json()["detail"]
    piped = agent.post("envd/process/start", {"process": {"cmd": "/bin/cat"}, "stdin": True}).json()
    r = agent.post("envd/process/update", {"process": {"pid": piped["pid"]}, "pty": PTY})
    assert r.status_code == 400 and "no open pty" in r.json()["detail"]
    r = agent.post("envd/process/input", {"process": {"pid": piped["pid"]},
                                          "input": {"stdin": b64("piped\n")}})
    assert r.status_code == 200
    Output(agent, piped["pid"]).until("piped")
    agent.post("envd/process/signal", {"process": {"pid": piped["pid"]}})
    pid = start_pty(agent)
    assert pid in [p["pid"] for p in agent.post("envd/process/list").json()["processes"]]
    assert agent.post("envd/process/signal", {"process": {"pid": pid},
                                              "signal": "SIGNAL_SIGKILL"}).status_code == 200
    out = Output(agent, pid)
    polling.poll(lambda: out.read() or out.end, 30, first=0, most=0)
    assert out.end["status"] == "signal: SIGKILL"
    r = agent.post("envd/process/input", {"process": {"pid": pid}, "input": {"pty": b64("x")}})
    assert r.status_code == 400  # its terminal is closed


def events_until(agent, watcher_id: str, wanted: set[tuple[str, str]],
                 seen: list[tuple[str, str]] | None = None, timeout: float = 30):
    """GetWatcherEvents until ``wanted`` were seen (added to ``seen``, which is returned)."""
    seen = [] if seen is None else seen

    def check() -> bool:
        r = agent.post("envd/watch/events", {"watcherId": watcher_id})
        assert r.status_code == 200, r.text
        seen.extend((e["type"], e["name"]) for e in r.json()["events"])
        return wanted <= set(seen)

    polling.poll(check, timeout)
    assert wanted <= set(seen), seen
    return seen


def test_watcher_reports_each_kind_of_change(agent, tmp_path):
    root = tmp_path / "watched"
    (root / "sub").mkdir(parents=True)
    r = agent.post("envd/watch/create", {"path": str(root), "recursive": True})
    assert r.status_code == 200, r.text
    watcher = r.json()["watcherId"]
    (root / "a.txt").write_text("one")
    os.chmod(root / "a.txt", 0o600)
    os.rename(root / "a.txt", root / "b.txt")
    (root / "b.txt").unlink()
    (root / "sub" / "deep.txt").write_text("x")
    (root / "new").mkdir()
    seen = events_until(agent, watcher, {("EVENT_TYPE_CREATE", "new")})
    (root / "new" / "inner.txt").write_text("x")  # a folder made after the start is watched too
    events_until(agent, watcher, {
        ("EVENT_TYPE_CREATE", "a.txt"), ("EVENT_TYPE_WRITE", "a.txt"),
        ("EVENT_TYPE_CHMOD", "a.txt"), ("EVENT_TYPE_RENAME", "a.txt"),
        ("EVENT_TYPE_CREATE", "b.txt"), ("EVENT_TYPE_REMOVE", "b.txt"),
        ("EVENT_TYPE_CREATE", "sub/deep.txt"), ("EVENT_TYPE_CREATE", "new/inner.txt")}, seen)
    assert seen.index(("EVENT_TYPE_CREATE", "a.txt")) < seen.index(("EVENT_TYPE_REMOVE", "b.txt"))
    # A stream follows the same log by cursor.
    got = agent.post("envd/watch/read", {"watcherId": watcher, "cursor": 0}).json()
    assert {"filesystem": {"name": "a.txt", "type": "EVENT_TYPE_CREATE"}} in got["events"]
    assert agent.post("envd/watch/remove", {"watcherId": watcher}).status_code == 200
    r = agent.post("envd/watch/events", {"watcherId": watcher})
    assert r.status_code == 404


def test_watcher_errors_and_a_flat_watch(agent, tmp_path):
    assert agent.post("envd/watch/create", {"path": str(tmp_path / "nope")}).status_code == 404
    (tmp_path / "f").write_text("")
    r = agent.post("envd/watch/create", {"path": str(tmp_path / "f")})
    assert r.status_code == 400 and "not a directory" in r.json()["detail"]
    assert agent.post("envd/watch/create", {}).status_code == 400
    assert agent.post("envd/watch/events", {}).status_code == 400
    (tmp_path / "d" / "sub").mkdir(parents=True)
    watcher = agent.post("envd/watch/create", {"path": str(tmp_path / "d")}).json()["watcherId"]
    (tmp_path / "d" / "sub" / "below.txt").write_text("")  # not recursive: unseen
    (tmp_path / "d" / "top.txt").write_text("")
    seen = events_until(agent, watcher, {("EVENT_TYPE_CREATE", "top.txt")})
    assert all(not name.startswith("sub/") for _, name in seen)
    agent.post("envd/watch/remove", {"watcherId": watcher})


def test_metrics_are_real_numbers_with_the_sdk_names(agent):
    r = agent.get("envd/metrics")
    assert r.status_code == 200, r.text
    sample = r.json()
    assert set(sample) == {"timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed",
                           "memTotal", "memCache", "diskUsed", "diskTotal"}
    assert sample["cpuCount"] >= 1 and 0 <= sample["cpuUsedPct"] <= 100
    assert 0 < sample["memUsed"] <= sample["memTotal"] and 0 < sample["diskUsed"] <= sample["diskTotal"]
    assert sample["timestamp"].endswith("Z") and sample["timestampUnix"] > 1_600_000_000
