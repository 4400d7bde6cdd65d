"""The ``run_shell_command`` tool: ``bash -c`` in the workspace, in its own process group, with a timeout."""

from __future__ import annotations

import logging
import subprocess
import time

from . import procs
from .results import split_output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

log = logging.getLogger("sandbox_agent.shell")

MAX_OUTPUT = 16 << 20  # per stream; the rest is dropped and said so in stderr
TIMEOUT_RETURNCODE = "124"  # as coreutils timeout(1): the command was killed because it ran too long
OOM_RETURNCODE = "137"  # 128 + SIGKILL, as a shell reports a command the OOM killer ended


def run_shell_command(command: str, timeout: float, cwd: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Run ``command`` and answer upstream's CallToolResult: stdout, [stderr], returncode.

    On timeout the whole process group is killed with SIGKILL, stderr says so and the returncode is
    ``124``. The timeout also covers background jobs that keep the output pipes open. A command
    the kernel killed for the sandbox's memory limit gets ``137`` and a stderr line saying so;
    its processes, not the agent, are what the kernel kills first.
    """
    oom_before = procs.oom_kills()
    proc = procs.spawn(["bash", "-c", command], cwd, env, oom_victim=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        out, done, dropped = procs.read_until([proc.stdout, proc.stderr], deadline, MAX_OUTPUT)
        returncode = procs.wait(proc, max(0.0, deadline - time.monotonic())) if done else None
        timed_out = returncode is None
        if timed_out:
            procs.kill_group(proc)
            # Whatever the group wrote before it died; processes that left the group may hold the pipes.
            rest, _, more = procs.read_until([proc.stdout, proc.stderr], time.monotonic() + 1.0, MAX_OUTPUT)
            out = {s: out[s] + rest[s] for s in out}
            dropped += more
            procs.wait(proc, 5.0)
    finally:
        if proc.poll() is None:
            procs.kill_group(proc)
            procs.wait(proc, 5.0)
        proc.stdout.close()
        proc.stderr.close()
    stdout = out[proc.stdout].decode("utf-8", "replace")
    stderr = out[proc.stderr].decode("utf-8", "replace")
    if dropped:
        stderr += f"\n[sandbox-agent] output truncated: {dropped} bytes beyond {MAX_OUTPUT} per stream\n"
    if oom_before is not None and (procs.oom_kills() or 0) > oom_before:
        killed = returncode in (-9, 137)
        log.warning("shell command: a process was killed for the sandbox's memory limit")
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
        stderr += "[sandbox-agent] " + procs.oom_message(
            "The command was" if killed else "A process this command started was") + "\n"
        if killed:
            returncode = int(OOM_RETURNCODE)
    if timed_out:
        log.info("shell command timed out after %ss; process group %d killed",
                 procs.seconds(timeout), proc.pid)
        if stderr and not stderr.endswith("\n"):
            stderr += "\n"
        stderr += f"Command timed out after {procs.seconds(timeout)} seconds"
        return split_output(stdout, stderr, TIMEOUT_RETURNCODE)
    return split_output(stdout, stderr, str(returncode))

