"""The compose cluster, as a new user runs it: the service image built with no registry,
``docker compose up``, an agentscope SDK session through the cluster's API, two extra worker hosts
joining with plain ``celery -A sandbox_workers worker`` and serving sessions, ``down -v``.

The work is done by ``deploy/compose-smoke`` (so an operator runs exactly what CI runs); this test
runs it and checks, independently, that no container, network or volume of the run is left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def compose_missing() -> str | None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return None
    if shutil.which("docker-compose"):
        return None
    return "neither `docker compose` nor `docker-compose` is installed (scripts/setup installs it)"


def test_compose_cluster_with_two_extra_hosts_serves_sdk_sessions_and_leaves_nothing(docker_client):
    pytest.importorskip("agentscope_runtime.sandbox")
    reason = compose_missing()
    if reason:
        skip_or_fail(reason)
    before = {c.id for c in docker_client.containers.list(all=True)}
    done = subprocess.run([sys.executable, str(REPO / "deploy" / "compose-smoke"), "--extra-hosts", "2"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    report_line = next((line for line in reversed(done.stdout.splitlines())
                        if line.startswith("{")), "{}")
    report = json.loads(report_line)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    assert report["left_behind"] == []
    print("compose timings (s):", report["timings_s"])
    project = [c for c in docker_client.containers.list(all=True, filters={"name": "sfsmoke"})
               if c.id not in before]
    assert project == [], [c.name for c in project]
