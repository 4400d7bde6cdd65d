"""E2B envd's process service: start (on pipes or a pty), follow output by cursor, list,
signal, stdin, resize.

A process outlives whoever started it. Its output goes to a bounded log that readers follow by
cursor (the fleet's worker relays it to the API), so a reader that goes away leaves the process
running and a later reader reattaches by pid or tag. Output a reader lags behind by more than
LOG_LIMIT bytes is dropped, oldest first, and the reader is told how much.
"""

from __future__ import annotations

import base64
import collections
import os
import selectors
import signal
import subprocess
import threading
import time

from . import procs
from .errors import HTTPError, bad_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

LOG_LIMIT = 1 << 20  # bytes of output kept per process for readers that lag
KEEP_ENDED = 120.0  # seconds an ended process can still be read (a reader reattaching late)
HOME = "/home/user"
USER = "user"
SIGNALS = {"SIGNAL_SIGKILL": signal.SIGKILL, "SIGNAL_SIGTERM": signal.SIGTERM,
           "SIGNAL_SIGINT": signal.SIGINT, "SIGNAL_SIGHUP": signal.SIGHUP}


def user_env(base: Mapping[str, str]) -> dict[str, str]:
    """What every E2B process starts with: the sandbox's environment (create-time envVars
    included) and E2B's default user's HOME and USER."""
    env = dict(base)
    env.update(HOME=HOME, USER=USER, LOGNAME=USER)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def home_or_root(cwd: str | None) -> str:
    if cwd:
        return cwd
    return HOME if os.path.isdir(HOME) else "/"


class EventLog:
    """Events one writer adds and readers follow by cursor, bounded to LOG_LIMIT bytes."""

    def __init__(self) -> None:
        self.events: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
        self.first = 0  # cursor of events[0]
        self.size = 0
        self.end: dict[str, Any] | None = None
        self.ended_at = 0.0
        self.cond = threading.Condition()

    def add(self, event: dict[str, Any], size: int = 0) -> None:
        with self.cond:
            self.events.append((event, size))
            self.size += size
            while self.size > LOG_LIMIT and len(self.events) > 1:
                self.size -= self.events.popleft()[1]
                self.first += 1
            self.cond.notify_all()

    def finish(self, end: dict[str, Any]) -> None:
        with self.cond:
            self.end = end
            self.ended_at = time.monotonic()
            self.cond.notify_all()

    def read(self, cursor: int, wait: float) -> dict[str, Any]:
        """Events from ``cursor`` on, waiting up to ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        with self.cond:
            while cursor >= self.first + len(self.events) and self.end is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            start = max(cursor, self.first)
            events = [e for e, _ in list(self.events)[start - self.first:]]
            return {"events": events, "cursor": self.first + len(self.events),
                    "dropped": max(0, self.first - cursor), "end": self.end}


class Proc(EventLog):
    def __init__(self, popen: subprocess.Popen, config: dict[str, Any], tag: str | None,
                 master: int | None = None) -> None:
        super().__init__()
        self.popen = popen
        self.pid = popen.pid
        self.config = config
        self.tag = tag
        self.master = master  # a pty process's terminal (None once closed); else it has pipes
        self.is_pty = master is not None
        self.io_lock = threading.Lock()  # no write to a master fd number closed and reused

    def write_pty(self, data: bytes) -> None:
        with self.io_lock:
            if self.master is None:
                raise HTTPError(400, f"process {self.pid} has no open pty")
            view = memoryview(data)
            while view:
                view = view[os.write(self.master, view):]

    def close_pty(self) -> None:
        with self.io_lock:
            if self.master is not None:
                os.close(self.master)
                self.master = None

    def read(self, cursor: int, wait: float) -> dict[str, Any]:
        return {"pid": self.pid, **super().read(cursor, wait)}


class ProcessTable:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = user_env(env)
        self._procs: dict[int, Proc] = {}
        self._lock = threading.Lock()

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        config = body.get("process") or {}
        cmd = config.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            raise bad_request("process.cmd is required")
        args = config.get("args") or []
        envs = config.get("envs") or {}
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise bad_request("process.args must be a list of strings")
        if not isinstance(envs, dict):
            raise bad_request("process.envs must be an object")
        cwd = home_or_root(config.get("cwd"))
        env = {**self._env, **{str(k): str(v) for k, v in envs.items()}}
        master = None
        try:
            if body.get("pty"):
                from . import envd_pty

                rows, cols = envd_pty.size_of(body["pty"])
                popen, master = envd_pty.spawn([cmd, *args], cwd, env, rows, cols)
            else:
                popen = procs.spawn([cmd, *args], cwd, env, oom_victim=True,
                                    stdin=subprocess.PIPE if body.get("stdin") else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise HTTPError(404, f"cannot start {cmd!r} in {cwd!r}: {exc.strerror}") from None
        proc = Proc(popen, {"cmd": cmd, "args": args, "envs": envs, "cwd": cwd}, body.get("tag"),
                    master)
        with self._lock:
            self._forget_ended()
            self._procs[proc.pid] = proc
        threading.Thread(target=self._pump, args=(proc,), daemon=True,
                         name=f"envd-proc-{proc.pid}").start()
        return {"pid": proc.pid}

    def _pump(self, proc: Proc) -> None:
        """Move the process's output into its log until it exits, then record the end."""
        popen = proc.popen
        if proc.master is not None:
            names = {proc.master: "pty"}
        else:
            names = {popen.stdout.fileno(): "stdout", popen.stderr.fileno(): "stderr"}
        with selectors.DefaultSelector() as sel:
            for fd in names:
                sel.register(fd, selectors.EVENT_READ)
            exited_at = None
            while sel.get_map():
                # After the process exits, a child it left running may hold the pipes: read
                # what is there, then stop (E2B ends a command when its process exits).
                if exited_at is None and popen.poll() is not None:
                    exited_at = time.monotonic()
                if exited_at is not None and time.monotonic() - exited_at > 0.2:
                    break
                for key, _ in sel.select(0.05 if exited_at else 0.5):
                    try:
                        chunk = os.read(key.fd, 65536)
                    except OSError:  # a pty's master: EIO once nothing holds the terminal
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    proc.add({"data": {names[key.fd]: base64.b64encode(chunk).decode()}},
                             len(chunk))
        code = popen.wait()
        proc.close_pty()
        for stream in (popen.stdout, popen.stderr, popen.stdin):
            if stream is not None:
                stream.close()
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            end = {"exitCode": -1, "exited": False, "status": f"signal: {name}"}
        else:
            end = {"exitCode": code, "exited": True, "status": f"exit status {code}"}
        proc.finish(end)

    def _forget_ended(self) -> None:
        now = time.monotonic()
        for pid in [p for p, proc in self._procs.items()
                    if proc.end is not None and now - proc.ended_at > KEEP_ENDED]:
            del self._procs[pid]

    def find(self, selector: dict[str, Any] | None) -> Proc:
        selector = selector or {}
        with self._lock:
            if selector.get("pid") is not None:
                proc = self._procs.get(int(selector["pid"]))
            else:
                proc = next((p for p in self._procs.values()
                             if selector.get("tag") and p.tag == selector["tag"]), None)
        if proc is None:
            raise HTTPError(404, f"process {selector.get('pid') or selector.get('tag')} not found")
        return proc

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        wait = min(max(float(body.get("wait") or 0), 0.0), 30.0)
        return self.find(body.get("process")).read(int(body.get("cursor") or 0), wait)

    def list(self) -> dict[str, Any]:
        with self._lock:
            self._forget_ended()
            running = [p for p in self._procs.values() if p.end is None]
        return {"processes": [{"pid": p.pid, "config": p.config, **({"tag": p.tag} if p.tag else {})}
                              for p in running]}

    def signal(self, body: dict[str, Any]) -> dict[str, Any]:
        proc = self.find(body.get("process"))
        sig = SIGNALS.get(body.get("signal") or "SIGNAL_SIGKILL")
        if sig is None:
            raise bad_request(f"unknown signal {body.get('signal')!r}")
        if proc.end is not None:
            raise HTTPError(404, f"process {proc.pid} has ended")
        procs.kill_group(proc.popen, sig)
        return {}

    def send_input(self, body: dict[str, Any]) -> dict[str, Any]:
        """``input`` is envd's ProcessInput: ``{stdin: b64}`` or ``{pty: b64}``. A pty process
        has no pipes: its input is what is typed at its terminal, either way."""
        proc = self.find(body.get("process"))
        given = body.get("input") if isinstance(body.get("input"), dict) else {}
        try:
            data = base64.b64decode(given.get("pty") or given.get("stdin") or "", validate=True)
        except (ValueError, TypeError):
            raise bad_request("input must be base64") from None
        if proc.is_pty or "pty" in given:
            proc.write_pty(data)
            return {}
        if proc.popen.stdin is None or proc.popen.stdin.closed:
            raise HTTPError(400, f"process {proc.pid} has no open stdin")
        proc.popen.stdin.write(data)
        proc.popen.stdin.flush()
        return {}

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """envd's Update: a pty's new size (``pty: {size: {rows, cols}}``)."""
        proc = self.find(body.get("process"))
        if body.get("pty") is None:
            return {}
        from . import envd_pty

        rows, cols = envd_pty.size_of(body["pty"])
        with proc.io_lock:
            if proc.master is None:
                raise HTTPError(400, f"process {proc.pid} has no open pty")
            envd_pty.resize(proc.master, rows, cols)
        return {}

    def close_stdin(self, body: dict[str, Any]) -> dict[str, Any]:
        proc = self.find(body.get("process"))
        if proc.popen.stdin is not None and not proc.popen.stdin.closed:
            proc.popen.stdin.close()
        return {}

    def close(self) -> None:
        with self._lock:
            for proc in self._procs.values():
                if proc.end is None:
                    procs.kill_group(proc.popen)
