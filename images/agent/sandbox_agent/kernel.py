"""The ``run_ipython_cell`` tool: one stateful IPython kernel in a child process, started on first use.

Cells share state and run one at a time. A cell that outlives its timeout gets SIGINT (its state is
kept); if the kernel does not answer within :data:`INTERRUPT_GRACE` seconds it is killed and the next
cell starts a fresh one (its state is lost, and the answer says so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

from . import procs
from .results import split_output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

log = logging.getLogger("sandbox_agent.kernel")

INTERRUPT_GRACE = 3.0
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


class KernelDied(Exception):
    pass


class Kernel:
    #: The child's module; the E2B code interpreter's contexts run another (envd_code_child).
    CHILD = "sandbox_agent.kernel_child"

    def __init__(self, cwd: str, env: Mapping[str, str], start_timeout: float) -> None:
        self._cwd = cwd
        self._env = dict(env)
        paths = [_PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                     if p and p != _PACKAGE_PARENT]
        self._env["PYTHONPATH"] = os.pathsep.join(paths)  # so that -m sandbox_agent.kernel_child works
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._requests: Any = None
        self._replies = -1
        self._buffer = b""
        self._seq = 0
        self._oom_kills: int | None = None  # the sandbox's OOM kills when this kernel started
        self.engine: str | None = None

    # ---- the tool --------------------------------------------------------------------------------
    def run_cell(self, code: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return split_output("", f"Another cell was still running; gave up waiting after "
                                    f"{procs.seconds(timeout)} seconds")
        try:
            return self._run_locked(code, timeout, deadline)
        finally:
            self._lock.release()

    def _run_locked(self, code: str, timeout: float, deadline: float) -> dict[str, Any]:
        if self._proc is None:
            started = time.monotonic()
            self._start()
            deadline += time.monotonic() - started  # starting the kernel does not count against the cell
        self._seq += 1
        try:
            self._send({"id": self._seq, "code": code})
            reply = self._receive(deadline)
            if reply is not None:
                return split_output(reply["stdout"], reply["stderr"])
            log.info("cell timed out after %ss; interrupting the kernel", procs.seconds(timeout))
            os.kill(self._proc.pid, signal.SIGINT)
            reply = self._receive(time.monotonic() + INTERRUPT_GRACE)
        except KernelDied as exc:
            oom = self._killed_for_memory()
            self.close()
            if oom:
                log.warning("kernel was killed for the sandbox's memory limit")
                return split_output("", f"{procs.oom_message('The IPython kernel was')}; its state "
                                        "was lost. The next cell starts a new kernel.")
            return split_output("", f"The IPython kernel exited unexpectedly ({exc}); its state was lost. "
                                    "The next cell starts a new kernel.")
        message = f"Cell timed out after {procs.seconds(timeout)} seconds"
        if reply is None:
            log.warning("kernel ignored the interrupt; killing it")
            self.close()
            return split_output("", f"{message}; the kernel did not respond to an interrupt and was "
                                    "killed; the next cell starts a new one: all variables, imports and "
                                    "state were lost.")
        stderr = reply["stderr"]
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
        return split_output(reply["stdout"], f"{stderr}{message} and was interrupted (KeyboardInterrupt); "
                                             "the kernel state is kept.")

    # ---- the child process -----------------------------------------------------------------------
    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._oom_kills = procs.oom_kills()
        try:
            self._proc = procs.spawn(
                [sys.executable, "-m", self.CHILD, str(to_child_r), str(from_child_w)],
                self._cwd, self._env, oom_victim=True, stdin=subprocess.DEVNULL,
                pass_fds=(to_child_r, from_child_w))
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._requests = os.fdopen(to_child_w, "wb")
        self._replies = from_child_r
        self._buffer = b""
        try:
            ready = self._receive(time.monotonic() + self._start_timeout)
        except KernelDied as exc:
            self.close()
            raise RuntimeError(f"the IPython kernel failed to start ({exc})") from None
        if ready is None:
            self.close()
            raise RuntimeError(f"the IPython kernel did not start within {self._start_timeout}s")
        self.engine = ready.get("engine")
        log.info("kernel started (pid %d, engine %s)", self._proc.pid, self.engine)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._requests.write(json.dumps(message).encode() + b"\n")
            self._requests.flush()
        except (BrokenPipeError, ValueError):
            raise KernelDied(self._exit_status()) from None

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        """The next reply, or None when ``deadline`` passes first."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._replies], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise KernelDied(self._exit_status())
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise KernelDied("it sent an unreadable reply") from None

    def _exit_status(self) -> str:
        code = procs.wait(self._proc, 2.0) if self._proc else None
        if code is None:
            return "no reply"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _killed_for_memory(self) -> bool:
        """Whether the kernel died of SIGKILL after the sandbox's OOM killer struck."""
        code = procs.wait(self._proc, 2.0) if self._proc else None
        now = procs.oom_kills()
        return code == -9 and self._oom_kills is not None and now is not None and now > self._oom_kills

    def close(self) -> None:
        """Kill the kernel and everything it started; the next cell starts a new one."""
        proc, self._proc = self._proc, None
        if proc is not None:
            procs.kill_group(proc)
            procs.wait(proc, 5.0)
        if self._requests is not None:
            with contextlib.suppress(OSError):
                self._requests.close()
            self._requests = None
        if self._replies >= 0:
            os.close(self._replies)
            self._replies = -1

    def status(self) -> tuple[bool, str | None]:
        return self._proc is not None, self.engine
