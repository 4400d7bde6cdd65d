"""What a fleet logs: little when idle, one line per sandbox event, no tool output; DEBUG shows
debug lines; LOG_FORMAT=json lines parse."""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: A log line of the fleet's own text format: time, level, [role], logger.
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                  r"\[([\w@.-]+)\] ([\w.-]+): ")
IDLE_WINDOW = 20


def log_lines(fleet, since: int = 0) -> list[str]:
    return fleet.log.read_text(errors="replace")[since:].splitlines()


def test_an_idle_fleet_is_quiet_and_tool_output_stays_out(make_fleet):
    fleet = make_fleet()
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 1, 60,
                   "a warm sandbox")
    # Wait for the start-up lines to end (the warm sandbox's warm-up call), then watch the idle
    # fleet for a while: beat ticks every second (refill and reaper) all along.
    fleet.wait_for(lambda: "warm, in the base pool" in fleet.tail(20000), 30, "the pool's create line")
    mark = fleet.log.stat().st_size
    time.sleep(IDLE_WINDOW)  # a measuring window, not synchronisation
    idle = [line for line in log_lines(fleet, mark) if LINE.match(line)]
    print(f"{len(idle)} lines in {IDLE_WINDOW}s of an idle fleet: {idle}")
    assert len(idle) <= 3, idle

    secret = secrets.token_hex(8)
    mark = fleet.log.stat().st_size
    name = fleet.data("create", {"sandbox_type": "base", "meta": {"session_ctx_id": "logs"}},
                      allow_null=False)
    result = fleet.data("call_tool", {"identity": name, "tool_name": "run_shell_command",
                                      "arguments": {"command": f"echo {secret}-out"}})
    assert f"{secret}-out" in json.dumps(result)
    assert fleet.data("release", {"identity": name}) is True
    fleet.wait_for(lambda: f"sandbox {name}: torn down" in fleet.tail(20000), 30, "the teardown")
    session = log_lines(fleet, mark)
    assert not [line for line in session if secret in line], "tool input or output was logged"
    # The API's own INFO lines are kept under gunicorn, and each says which sandbox.
    assert any(re.search(rf"INFO \[api\] [\w.]+: sandbox {name}: released", line) for line in session), \
        session
    assert not [line for line in session if "succeeded in" in line or " received" in line]


def test_debug_shows_debug_lines_and_json_lines_parse(make_fleet):
    fleet = make_fleet(DEBUG="true", LOG_FORMAT="json")
    fleet.wait_for(lambda: fleet.get("fleet/status").json()["pools"]["base"]["warm"] == 1, 60,
                   "a warm sandbox")
    fleet.wait_for(lambda: '"level": "DEBUG"' in fleet.tail(50000), 30, "a debug line")
    entries = []
    for line in log_lines(fleet):
        if line.startswith("{"):
            entries.append(json.loads(line))  # every JSON-looking line parses
    assert entries
    assert {"time", "level", "logger", "role", "pid", "message"} <= set(entries[0])
    roles = {e["role"] for e in entries}
    assert {"server", "api", "worker-lifecycle", "worker-calls", "beat"} <= roles, roles
    levels = {e["level"] for e in entries}
    assert "DEBUG" in levels
    # At debug, Celery's routine lines are back (they are below INFO otherwise).
    assert any(e["logger"] in ("celery.beat", "celery.app.trace", "celery.worker.strategy")
               for e in entries)
