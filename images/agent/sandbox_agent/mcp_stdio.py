"""MCP's stdio transport: a server process, newline-delimited JSON on its stdin and stdout."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading

from . import procs
from .mcp_session import MCPError, Transport

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

log = logging.getLogger("sandbox_agent.mcp")


class StdioTransport(Transport):
    """``{"command": ..., "args": [...], "env": {...}}``: started in its own process group, in ``cwd``."""

    def __init__(self, name: str, config: Mapping[str, Any], cwd: str, env: Mapping[str, str]) -> None:
        super().__init__(name)
        self.command = str(config["command"])
        self.args = [str(a) for a in config.get("args") or []]
        self._cwd = cwd
        self._env = {**env, **{str(k): str(v) for k, v in (config.get("env") or {}).items()}}
        self._proc: subprocess.Popen | None = None
        #: Its pipes ended (stdout at EOF, or stdin broken): a server that exits closes them a
        #: moment before the kernel lets it be reaped, and it can answer nothing from then on.
        self._gone = False
        self._write_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._gone and self._proc.poll() is None

    def describe(self) -> str:
        return f"pid {self._proc.pid}" if self._proc else "not running"

    def open(self, receive: Callable[[bytes | str], None], closed: Callable[[], None]) -> None:
        argv = [shutil.which(self.command, path=self._env.get("PATH")) or self.command, *self.args]
        self._gone = False
        try:
            self._proc = procs.spawn(argv, self._cwd, self._env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        except OSError as exc:
            raise MCPError(f"cannot start {self.command!r}: {exc.strerror or exc}") from None
        threading.Thread(target=self._read_loop, args=(self._proc, receive, closed),
                         name=f"mcp-{self.name}", daemon=True).start()

    def _read_loop(self, proc: subprocess.Popen, receive: Callable[[bytes | str], None],
                   closed: Callable[[], None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line:
                receive(line)
        log.info("MCP server %r closed its stdout", self.name)
        if self._proc is proc:  # not a restarted one's
            self._gone = True
        closed()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False).encode() + b"\n"
        with self._write_lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise MCPError(f"MCP server {self.name!r} is not running")
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._gone = True
                raise MCPError(f"MCP server {self.name!r} exited") from None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if procs.wait(proc, 1.0) is None:
            procs.kill_group(proc)
            procs.wait(proc, 5.0)
