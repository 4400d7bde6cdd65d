"""The built base image: its agent answers on a published loopback port (builds nothing itself).

Build the image first with ``python3 -m sandbox_cli.builder base``; these tests skip when it is
missing (and fail instead under CI or SANDBOX_FLEET_REQUIRE_DOCKER=1, as the rest of the suite).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import pytest
import requests

from tests.conftest import BASE_IMAGE as IMAGE
from tests.conftest import require_docker, skip_or_fail

pytestmark = pytest.mark.docker


def _wait_until(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Container:
    def __init__(self, cid: str, port: int, token: str) -> None:
        self.cid, self.token = cid, token
        self.url = f"http://127.0.0.1:{port}/fastapi"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def healthy(self) -> bool:
        try:
            return self.session.get(f"{self.url}/healthz", timeout=1).text == "OK"
        except requests.ConnectionError:
            return False

    def count(self, awk_filter: str) -> int:
        """How many of the container's processes match an awk filter on /proc/PID/stat."""
        out = self.shell(f"cat /proc/[0-9]*/stat 2>/dev/null | awk '{awk_filter}' | wc -l")
        return int(out["stdout"])

    def shell(self, command: str) -> dict:
        response = self.session.post(
            f"{self.url}/tools/run_shell_command", json={"command": command}, timeout=30
        )
        assert response.status_code == 200, response.text
        return {item["description"]: item["text"] for item in response.json()["content"]}


# PID 1 is tini in our image; on a base without tini the agent is PID 1 and forks its own init.
ENTRYPOINTS = {"tini": [], "agent-as-pid1": ["--entrypoint", "python3"]}


@pytest.fixture(scope="module", params=list(ENTRYPOINTS))
def container(request):
    if shutil.which("docker") is None:
        skip_or_fail("the docker CLI is not installed")
    require_docker(IMAGE)
    token = secrets.token_hex(16)
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "-e",
            f"SECRET_TOKEN={token}",
            *ENTRYPOINTS[request.param],
            IMAGE,
            *(["-m", "sandbox_agent"] if request.param != "tini" else []),
        ],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    cid = started.stdout.strip()
    try:
        mapping = subprocess.run(
            ["docker", "port", cid, "80/tcp"], capture_output=True, text=True, check=True
        )
        port = int(mapping.stdout.split()[0].rsplit(":", 1)[1])
        box = Container(cid, port, token)
        _wait_until(box.healthy, 30, "the agent in the image to answer healthz")
        yield box
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_healthz_and_auth(container):
    assert container.session.get(f"{container.url}/healthz", timeout=5).text == "OK"
    wrong = requests.get(f"{container.url}/healthz", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid secret token"}


def test_echo_in_the_workspace(container):
    out = container.shell("echo hello; pwd")
    assert out == {"stdout": "hello\n/workspace\n", "returncode": "0"}


def test_ipython_and_git_are_there(container):
    response = container.session.post(
        f"{container.url}/tools/run_ipython_cell",
        json={"code": "import IPython, sys; print(IPython.__version__, sys.version_info[:2])"},
        timeout=60,
    )
    assert response.status_code == 200
    assert "(3, 11)" in response.json()["content"][0]["text"]
    assert container.shell("git --version")["stdout"].startswith("git version")


def test_pid1_reaps_orphans(container):
    container.shell("for i in 1 2 3; do (sleep 0.1 &) ; done")
    # The orphans exit after 0.1 s; they are gone only once PID 1 has reaped them (a zombie stays).
    _wait_until(lambda: container.count('$2 == "(sleep)"') == 0, 10, "the orphaned sleeps to be reaped")
    assert container.count('$3 == "Z"') == 0


def test_docker_stop_is_prompt(container):
    # Had SIGTERM been ignored, docker would SIGKILL after the 10 s grace: exit code 137, not 0.
    subprocess.run(["docker", "stop", "-t", "10", container.cid], capture_output=True, check=True)
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.ExitCode}}", container.cid],
        capture_output=True,
        text=True,
        check=True,
    )
    assert state.stdout.strip() == "0"
