"""The IPython kernel process: ``python3 -m sandbox_agent.kernel_child RFD WFD``.

Runs in a child of the agent so the agent itself stays small until the first cell. Requests and
replies are JSON lines on the two pipe fds given as arguments (stdin is /dev/null, so ``input()`` in
a cell cannot read the protocol). SIGINT is blocked except while a cell runs, so the agent's interrupt
on timeout lands in the user's code as KeyboardInterrupt and never in the protocol.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import signal
import sys
import tempfile
import traceback

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_SIGINT = {signal.SIGINT}


def _ipython_engine() -> Callable[[str], None]:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False  # no sqlite file, no history thread
    shell = InteractiveShell.instance(config=config)
    return lambda code: shell.run_cell(code)  # as upstream: store_history=False


def _plain_engine() -> Callable[[str], None]:
    """A stateful ``exec`` for images without IPython: shared globals, last expression echoed."""
    namespace: dict[str, object] = {"__name__": "__main__", "__builtins__": builtins}

    def run(code: str) -> None:
        try:
            tree = ast.parse(code, "<cell>", "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, "<cell>", "exec"), namespace)
            if last is not None:
                value = eval(compile(last, "<cell>", "eval"), namespace)
                if value is not None:
                    namespace["_"] = value
                    print(repr(value))
        except BaseException as exc:  # noqa: B036 (a cell's SystemExit or KeyboardInterrupt is its output)
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, tb, file=sys.stdout)

    return run


class _FdCapture:
    """Capture what a cell's subprocesses write to fds 1 and 2 (``os.system``, ``subprocess.run``)."""

    def __enter__(self) -> _FdCapture:
        self.files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.files[0].fileno(), 1)
        os.dup2(self.files[1].fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd, saved in zip((1, 2), self.saved, strict=False):
            os.dup2(saved, fd)
            os.close(saved)

    def read(self) -> tuple[str, str]:
        out = []
        for f in self.files:
            f.seek(0)
            out.append(f.read().decode("utf-8", "replace"))
            f.close()
        return out[0], out[1]


def _run(engine: Callable[[str], None], code: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    real = sys.stdout, sys.stderr
    with _FdCapture() as fds:
        sys.stdout, sys.stderr = stdout, stderr
        try:
            # A SIGINT sent for an earlier cell that had already finished must not hit this one.
            if signal.SIGINT in signal.sigpending():
                signal.sigwait(_SIGINT)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
            try:
                engine(code)
            finally:
                _block_sigint()
        except KeyboardInterrupt:  # landed outside the engine's own handler
            stdout.write("KeyboardInterrupt\n")
        finally:
            sys.stdout, sys.stderr = real
    fd_out, fd_err = fds.read()
    return stdout.getvalue() + fd_out, stderr.getvalue() + fd_err


def _block_sigint() -> None:
    while True:
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
            return
        except KeyboardInterrupt:
            continue


def main(argv: list) -> int:
    _block_sigint()
    rfile = os.fdopen(int(argv[1]), "rb")
    wfile = os.fdopen(int(argv[2]), "wb")

    def reply(message: dict) -> None:
        wfile.write(json.dumps(message).encode() + b"\n")
        wfile.flush()

    try:
        engine, name = _ipython_engine(), "ipython"
    except ImportError:
        engine, name = _plain_engine(), "python"
    reply({"ready": True, "engine": name, "pid": os.getpid()})
    for line in rfile:
        request = json.loads(line)
        stdout, stderr = _run(engine, request["code"])
        reply({"id": request["id"], "stdout": stdout, "stderr": stderr})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
