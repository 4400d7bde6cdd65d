"""E2B's code interpreter: contexts, each an IPython child (envd_code_child), cells run in them.

The default context exists without being created; state persists across the cells of one
context. A cell past its timeout is interrupted (KeyboardInterrupt, state kept); a context that
ignores the interrupt is killed and the next cell starts it afresh, as the agentscope kernel does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

from . import procs
from .envd_process import KEEP_ENDED, EventLog, home_or_root, user_env
from .errors import HTTPError, bad_request
from .kernel import INTERRUPT_GRACE, Kernel, KernelDied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

DEFAULT = "default"
#: matplotlib draws into the cell's results (PNG) instead of a window or nothing.
MPL_INLINE = "module://matplotlib_inline.backend_inline"


class Context(Kernel):
    CHILD = "sandbox_agent.envd_code_child"

    def __init__(self, context_id: str, cwd: str, env: Mapping[str, str], start_timeout: float) -> None:
        super().__init__(cwd, {"MPLBACKEND": MPL_INLINE, **env}, start_timeout)
        self.id = context_id
        self.cwd = cwd

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "language": "python", "cwd": self.cwd}

    def execute(self, code: str, env_vars: dict[str, str], timeout: float,
                on_output: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        """Run a cell; stdout/stderr go to ``on_output`` as written, the rest is returned."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return [_error("TimeoutError", "another cell of this context was still running")]
        try:
            if self._proc is None:
                try:
                    self._start()
                except RuntimeError as exc:
                    raise HTTPError(503, str(exc)) from None
                deadline = time.monotonic() + timeout
            self._seq += 1
            try:
                self._send({"id": self._seq, "code": code, "env_vars": env_vars})
                reply = self._receive(deadline)
                while reply is not None and "stream" in reply:
                    on_output({"type": reply["stream"], "text": reply["text"]})
                    reply = self._receive(deadline)
                if reply is None:
                    os.kill(self._proc.pid, signal.SIGINT)
                    reply = self._receive(time.monotonic() + INTERRUPT_GRACE)
                    while reply is not None and "stream" in reply:
                        on_output({"type": reply["stream"], "text": reply["text"]})
                        reply = self._receive(time.monotonic() + INTERRUPT_GRACE)
                    if reply is None:
                        self.close()
                        return [_error("TimeoutError", f"the cell ran over {procs.seconds(timeout)}s and "
                                       "ignored the interrupt; the context was restarted, its state lost")]
            except KernelDied as exc:
                self.close()
                return [_error("KernelDied", f"the context's Python exited ({exc}); its state was lost")]
            return reply["outputs"]
        finally:
            self._lock.release()


def _error(name: str, value: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "value": value, "traceback": f"{name}: {value}"}


class Contexts:
    def __init__(self, env: Mapping[str, str], start_timeout: float) -> None:
        self._env = user_env(env)
        self._start_timeout = start_timeout
        self._contexts: dict[str, Context] = {}
        self._runs: dict[str, EventLog] = {}
        self._lock = threading.Lock()

    def get(self, context_id: str | None) -> Context:
        context_id = context_id or DEFAULT
        with self._lock:
            if context_id == DEFAULT and DEFAULT not in self._contexts:
                self._contexts[DEFAULT] = Context(DEFAULT, home_or_root(None), self._env,
                                                  self._start_timeout)
            context = self._contexts.get(context_id)
        if context is None:
            raise HTTPError(404, f"context {context_id} not found")
        return context

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        language = body.get("language") or "python"
        if language != "python":
            raise bad_request(f"language {language!r} is not supported here (python only)")
        cwd = home_or_root(body.get("cwd"))
        context = Context(uuid.uuid4().hex, cwd, self._env, self._start_timeout)
        with self._lock:
            self._contexts[context.id] = context
        return context.describe()

    def list(self) -> list[dict[str, Any]]:
        self.get(DEFAULT)
        with self._lock:
            return [c.describe() for c in self._contexts.values()]

    def delete(self, context_id: str) -> None:
        with self._lock:
            context = self._contexts.pop(context_id, None)
        if context is None:
            raise HTTPError(404, f"context {context_id} not found")
        context.close()

    def restart(self, context_id: str) -> None:
        self.get(context_id).close()  # the next cell starts it afresh

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run a cell in the background; its outputs are read by cursor (``read``), so they
        reach the client as they are written and a client that goes away stops nothing."""
        code, context, env_vars, timeout = self._cell(body)
        run, run_id = EventLog(), uuid.uuid4().hex

        def work() -> None:
            try:
                outputs = context.execute(code, env_vars, timeout, lambda o: run.add(o, len(o["text"])))
            except HTTPError as exc:
                outputs = [_error("ContextUnavailable", exc.detail)]
            for output in [*outputs, {"type": "end_of_execution"}]:
                run.add(output, len(str(output)))
            run.finish({"done": True})

        with self._lock:
            now = time.monotonic()
            for old in [k for k, r in self._runs.items() if r.end and now - r.ended_at > KEEP_ENDED]:
                del self._runs[old]
            self._runs[run_id] = run
        threading.Thread(target=work, daemon=True, name=f"envd-cell-{run_id[:8]}").start()
        return {"id": run_id}

    def read(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            run = self._runs.get(str(body.get("id")))
        if run is None:
            raise HTTPError(404, f"execution {body.get('id')} not found")
        return run.read(int(body.get("cursor") or 0), min(max(float(body.get("wait") or 0), 0.0), 30.0))

    def _cell(self, body: dict[str, Any]) -> tuple[str, Context, dict[str, str], float]:
        code = body.get("code")
        if not isinstance(code, str):
            raise bad_request("code must be a string")
        if body.get("language") not in (None, "python"):
            raise bad_request(f"language {body.get('language')!r} is not supported here (python only)")
        env_vars = {str(k): str(v) for k, v in (body.get("env_vars") or {}).items()}
        return code, self.get(body.get("context_id")), env_vars, float(body.get("timeout") or 300)

    def close(self) -> None:
        with self._lock:
            for context in self._contexts.values():
                context.close()
