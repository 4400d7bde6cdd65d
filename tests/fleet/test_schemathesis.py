"""schemathesis against the fleet's own OpenAPI document, on a real fleet: every operation, with
valid and invalid inputs, answers without a 5xx, and every 4xx says what is wrong in ``detail``
(E2B's routes, mounted in front of the API, in their own ``message``).

Bounded: a few examples per operation and mode, no shrinking, one time budget for the whole run
(operations not reached by then are listed, and most must be reached). The cap keeps the creates
the fuzzer sends to a couple of containers.
"""

import contextlib
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLES = 8
BUDGET = 300.0
CALL_TIMEOUT = 90


def _problem(operation, case, response) -> str | None:
    """What is wrong with one answer, or None."""
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 500:
        return where
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            return f"{where} (not JSON)"
        key = "message" if operation.definition.raw.get("x-mounted-app") else "detail"
        if not isinstance(body, dict) or not str(body.get(key) or body.get("detail") or "").strip():
            return f"{where} (no {key})"
    return None


def _fuzz(operation, mode, http, auth: dict, problems: list, statuses: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True)
    def fuzz(case):
        response = case.call(session=http, headers=auth, timeout=CALL_TIMEOUT)
        statuses[response.status_code] += 1
        problem = _problem(operation, case, response)
        if problem:
            problems.append(problem)

    fuzz()


def test_no_5xx_and_every_4xx_says_why(make_fleet):
    fleet = make_fleet(POOL_SIZE=1, MAX_SANDBOX_INSTANCES=3, FLEET_AUTH_FAILURES_PER_MINUTE=0)
    schema = schemathesis.openapi.from_url(f"{fleet.url}/openapi.json")
    auth = {"Authorization": f"Bearer {fleet.token}"}
    http = requests.Session()
    deadline = time.monotonic() + BUDGET
    problems: list[str] = []
    done, skipped = [], []
    statuses: Counter = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() > deadline:
            skipped.append(operation.label)
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with contextlib.suppress(Unsatisfiable):  # nothing invalid can be made of its inputs
                _fuzz(operation, mode, http, auth, problems, statuses)
        done.append(operation.label)
    print("answers by status:", dict(sorted(statuses.items())))

    assert not problems, "\n".join(problems[:30])
    assert statuses[200] and sum(n for status, n in statuses.items() if 400 <= status < 500)
    assert len(done) > 0.8 * (len(done) + len(skipped)), f"out of time before: {skipped}"
    assert requests.get(f"{fleet.url}/health", timeout=10).ok
