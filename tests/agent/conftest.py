"""Run sandbox_agent as a local process on a free loopback port (no Docker needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox_cli import orphans

AGENT_DIR = Path(__file__).resolve().parents[2] / "images" / "agent"
TOKEN = "test-token-123"


class Agent:
    """One agent process with its own workspace; ``url`` ends in ``/fastapi``."""

    def __init__(self, root: Path, **env: str) -> None:
        self.workspace = root / "workspace"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.log = root / "agent.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("TOOL_TIMEOUT", "NGINX_TIMEOUT", "MCP_TIMEOUT")
            },
            "PYTHONPATH": str(AGENT_DIR),
            "AGENT_HOST": "127.0.0.1",
            "AGENT_PORT": "0",
            "SECRET_TOKEN": TOKEN,
            "WORKSPACE_DIR": str(self.workspace),
            "MCP_SERVER_CONFIGS": "",
            "LOG_LEVEL": "DEBUG",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def start(self) -> Agent:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                orphans.wrap([sys.executable, "-m", "sandbox_agent"]),  # dies with the tests
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workspace,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.read_text())
            if found:
                self.port = int(found.group(1))
                return self
            assert self.proc.poll() is None, f"agent exited:\n{self.log.read_text()}"
            time.sleep(0.01)
        raise AssertionError(f"agent did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.session.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fastapi"

    def get(self, route: str, **kwargs) -> requests.Response:
        return self._call(self.session.get, route, **kwargs)

    def post(self, route: str, body: object = None, **kwargs) -> requests.Response:
        return self._call(self.session.post, route, json=body, **kwargs)

    def _call(self, method, route: str, **kwargs) -> requests.Response:
        try:
            return method(f"{self.url}/{route}", timeout=kwargs.pop("timeout", 30), **kwargs)
        except requests.RequestException as exc:  # say what the agent was doing meanwhile
            raise AssertionError(f"{route}: {exc}\nthe agent's log:\n{self.log.read_text()[-4000:]}") \
                from exc

    def tool(self, name: str, **arguments: object) -> dict:
        response = self.post(f"tools/{name}", arguments)
        assert response.status_code == 200, response.text
        return response.json()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (not yet reaped by its new parent) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def texts(result: dict) -> dict:
    """``{description: text}`` of a CallToolResult's content."""
    return {item["description"]: item["text"] for item in result["content"]}


@pytest.fixture(scope="session")
def agent(tmp_path_factory):
    agent = Agent(tmp_path_factory.mktemp("agent")).start()
    yield agent
    agent.stop()


@pytest.fixture
def make_agent(tmp_path):
    """Agents with their own settings, stopped after the test."""
    agents: list[Agent] = []

    def make(**env: str) -> Agent:
        agent = Agent(tmp_path / f"agent{len(agents)}", **env).start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()
