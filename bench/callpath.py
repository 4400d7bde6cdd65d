"""What the API process spends on one tool call, workers aside: ``python -m bench.callpath``.

The API app (``create_app``) runs in this process against a private redis-server, with one
running sandbox record. Each ``/call_tool`` goes the whole way through the API: auth, body checks,
the record read, Celery's ``send_task`` into Redis, and the wait for the reply, which a stand-in
for the worker pushes the moment the job is sent. Flask's test client replaces gunicorn. Prints
CPU and wall time per call, then (cProfile, ``--calls`` more) the share of each part: what a
cheaper call path would have to cut (docs/benchmarks.md).
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import click

from sandbox_api import create_app
from sandbox_core import jobs, states
from sandbox_core.settings import parse_settings
from tests.localfleet import private_redis

#: Parts of a call, by the function whose cumulative time is the part's.
PARTS = {
    "Celery send_task (message, routing, LPUSH)": ("celery/app/base.py", "send_task"),
    "  of it the LPUSH into the queue (a Redis round trip)": ("redis/commands/core.py", "lpush"),
    "record read + reply wait registered (one pipeline)": ("sandbox_core/store/records.py", "find"),
    "reply wait (BLPOP)": ("sandbox_core/store/coordination.py", "pop_reply"),
    "the stand-in worker's reply (not the API's)": ("sandbox_core/store/coordination.py", "reply"),
}
BODY = {"identity": "sb-1", "tool_name": "run_shell_command", "arguments": {"command": "echo hi"}}
REPLY = jobs.encode_reply({"content": [{"type": "text", "text": "hi\n"}], "isError": False})


def _app(redis_url: str):
    app = create_app(parse_settings({"REDIS_URL": redis_url, "FLEET_HOST_NAME": "h1",
                                     "BEARER_TOKEN": "bench"}), extensions=[])
    fleet = app.extensions["sandbox_fleet"]
    fleet.store.put("sb-1", container_name="sb-1", state=states.RUNNING, host="h1",
                    container_id="c1", agent_secret="x", session_ctx_id="",
                    last_active_at=time.time() + 86400)  # fresh: no heartbeat write per call
    celery, store = fleet.job_client.celery, fleet.store
    send = celery.send_task

    def send_and_answer(name, kwargs=None, task_id=None, **options):
        send(name, kwargs=kwargs, task_id=task_id, **options)
        store.reply(task_id, REPLY)

    celery.send_task = send_and_answer
    return app, store


def _calls(client, n: int) -> None:
    for _ in range(n):
        response = client.post("/call_tool", json=BODY, headers={"Authorization": "Bearer bench"})
        assert response.status_code == 200, response.get_data(as_text=True)


@click.command()
@click.option("--calls", default=3000, show_default=True)
def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as folder, private_redis(Path(folder)) as url:
        app, store = _app(url)
        client = app.test_client()
        _calls(client, 300)  # warm: imports, connections, Celery's producer pool
        cpu, wall = time.process_time(), time.perf_counter()
        _calls(client, calls)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"API in one process, {calls} calls: {cpu / calls * 1e3:.3f} ms CPU, "
              f"{wall / calls * 1e3:.3f} ms wall per call")
        profiler = cProfile.Profile()
        profiler.runcall(_calls, client, calls)
        stats = pstats.Stats(profiler).stats
        total = sum(tt for _cc, _nc, tt, _ct, _callers in stats.values())
        print(f"\nshare of the profiled time ({calls} calls more, under cProfile):")
        for part, (path, function) in PARTS.items():
            spent = sum(ct for (file, _line, name), (_cc, _nc, _tt, ct, _c) in stats.items()
                        if file.endswith(path) and name == function)
            print(f"  {spent / total:6.1%}  {part}")
        print("  the rest: Flask, werkzeug and its test client, auth, body checks, metrics")
        store.redis.flushdb()


if __name__ == "__main__":
    main()
