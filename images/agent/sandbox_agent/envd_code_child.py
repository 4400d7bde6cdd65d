"""One code-interpreter context: ``python3 -m sandbox_agent.envd_code_child RFD WFD``.

An IPython shell whose display machinery is captured: the value of a cell's last expression
(the main result), ``display()`` calls and matplotlib figures (through matplotlib-inline, chosen
with MPLBACKEND by the parent) come back as MIME bundles, errors with name, value and traceback,
as E2B's code interpreter answers them. JSON lines on two pipe fds, as kernel_child.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sys
import threading

from .kernel_child import _block_sigint, _FdCapture

_MIME_KEYS = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown",
              "image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
              "application/pdf": "pdf", "text/latex": "latex", "application/json": "json",
              "application/javascript": "javascript"}


def result(data: dict, main: bool) -> dict:
    out: dict = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode()
        key = _MIME_KEYS.get(mime)
        if key:
            out[key] = value
        else:
            extra[mime] = value
    if extra:
        out["extra"] = extra
    return out


def make_shell(outputs: list):
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    class Hook(DisplayHook):
        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict, md_dict=None) -> None:
            outputs.append(result(format_dict, True))

        def finish_displayhook(self) -> None:
            pass

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, *args, **kwargs) -> None:
            outputs.append(result(data, False))

        def clear_output(self, wait=False) -> None:
            pass

    class Shell(InteractiveShell):
        displayhook_class = Type(Hook)
        display_pub_class = Type(Publisher)

    config = Config()
    config.HistoryManager.enabled = False
    shell = Shell.instance(config=config)

    def show_traceback(etype, evalue, stb) -> None:
        outputs.append({"type": "error", "name": getattr(etype, "__name__", str(etype)),
                        "value": str(evalue), "traceback": "\n".join(stb)})

    shell._showtraceback = show_traceback
    return shell


class _Stream(io.TextIOBase):
    """A cell's sys.stdout / sys.stderr: each complete line goes to the parent at once
    (streamed); the rest on flush() and at the cell's end."""

    def __init__(self, name: str, send) -> None:
        self.name, self.send, self.buffer = name, send, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += str(text)
        if "\n" in self.buffer:
            head, _, self.buffer = self.buffer.rpartition("\n")
            self.send({"stream": self.name, "text": head + "\n"})
        return len(text)

    def flush(self) -> None:
        if self.buffer:
            self.send({"stream": self.name, "text": self.buffer})
            self.buffer = ""


def run(shell, outputs: list, code: str, env_vars: dict, send) -> list:
    del outputs[:]
    saved = {k: os.environ.get(k) for k in env_vars}
    os.environ.update({str(k): str(v) for k, v in env_vars.items()})
    stdout, stderr = _Stream("stdout", send), _Stream("stderr", send)
    real = sys.stdout, sys.stderr
    with _FdCapture() as fds:
        sys.stdout, sys.stderr = stdout, stderr
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            try:
                shell.run_cell(code, store_history=True)
            finally:
                _block_sigint()
        except KeyboardInterrupt:
            outputs.append({"type": "error", "name": "KeyboardInterrupt", "value": "",
                            "traceback": "KeyboardInterrupt"})
        finally:
            stdout.flush()
            stderr.flush()
            sys.stdout, sys.stderr = real
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    fd_out, fd_err = fds.read()
    # What the cell's subprocesses wrote to fds 1 and 2 comes at the end.
    streams = [{"type": "stdout", "text": fd_out}, {"type": "stderr", "text": fd_err}]
    return ([s for s in streams if s["text"]] + list(outputs)
            + [{"type": "number_of_executions", "execution_count": shell.execution_count - 1}])


def main(argv: list) -> int:
    _block_sigint()
    rfile = os.fdopen(int(argv[1]), "rb")
    wfile = os.fdopen(int(argv[2]), "wb")
    outputs: list = []
    shell = make_shell(outputs)
    lock = threading.Lock()  # a cell's threads may print at once

    def send(message: dict) -> None:
        with lock:
            wfile.write(json.dumps(message).encode() + b"\n")
            wfile.flush()

    send({"ready": True, "pid": os.getpid()})
    for line in rfile:
        request = json.loads(line)
        reply = run(shell, outputs, request["code"], request.get("env_vars") or {}, send)
        send({"id": request["id"], "outputs": reply})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
