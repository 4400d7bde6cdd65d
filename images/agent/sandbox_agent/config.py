"""Settings of the agent, read from the environment once at start-up."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_TOKEN = "secret_token123"
DEFAULT_TIMEOUT = 60.0
MCP_CONFIG_PATHS = (
    "/agentscope_runtime/mcp_server_configs.json",  # where upstream images put it
    "/opt/sandbox-agent/mcp_server_configs.json",  # where sandbox-fleet images put it
)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


class Settings:
    """Everything the agent reads from its environment (a plain class: ``dataclasses`` pulls in
    ``inspect``, about 1.2 MiB, in a process kept under 15 MiB).

    ``tool_timeout`` is the default limit of one tool call: ``TOOL_TIMEOUT``, else the ``NGINX_TIMEOUT``
    that the upstream manager sets for the container, else 60 s. ``child_env`` is the environment of
    the processes the agent starts (shell, kernel, MCP servers): the agent's own minus its secret, so
    a tool cannot print the token that drives the sandbox. ``novnc_dir`` and ``vnc_port`` (the gui
    image sets ``NOVNC_DIR`` and ``VNC_PORT``) turn on the desktop routes ``/vnc/*`` and
    ``/websockify``.
    """

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 80,
        token: str = DEFAULT_TOKEN,
        workspace: str = "/workspace",
        tool_timeout: float = DEFAULT_TIMEOUT,
        mcp_timeout: float = DEFAULT_TIMEOUT,
        kernel_start_timeout: float = 30.0,
        idle_timeout: float = 300.0,
        log_level: str = "INFO",
        mcp_config_paths: tuple[str, ...] = MCP_CONFIG_PATHS,
        child_env: Mapping[str, str] | None = None,
        novnc_dir: str | None = None,
        vnc_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.workspace = workspace
        self.tool_timeout = tool_timeout
        self.mcp_timeout = mcp_timeout
        self.kernel_start_timeout = kernel_start_timeout
        self.idle_timeout = idle_timeout
        self.log_level = log_level
        self.mcp_config_paths = mcp_config_paths
        self.child_env = dict(child_env or {})
        self.novnc_dir = novnc_dir
        self.vnc_port = vnc_port

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        tool_timeout = _float(env, "TOOL_TIMEOUT", _float(env, "NGINX_TIMEOUT", DEFAULT_TIMEOUT))
        paths = env.get("MCP_SERVER_CONFIGS")
        return cls(
            host=env.get("AGENT_HOST", "0.0.0.0"),
            port=int(env.get("AGENT_PORT", "80")),
            token=env.get("SECRET_TOKEN", DEFAULT_TOKEN),
            workspace=env.get("WORKSPACE_DIR", "/workspace"),
            tool_timeout=tool_timeout,
            mcp_timeout=_float(env, "MCP_TIMEOUT", tool_timeout),
            kernel_start_timeout=_float(env, "KERNEL_START_TIMEOUT", 30.0),
            idle_timeout=_float(env, "AGENT_IDLE_TIMEOUT", 300.0),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            mcp_config_paths=tuple(p for p in paths.split(os.pathsep) if p) if paths is not None
            else MCP_CONFIG_PATHS,
            child_env={k: v for k, v in env.items() if k != "SECRET_TOKEN"},
            novnc_dir=env.get("NOVNC_DIR") or None,
            vnc_port=int(env["VNC_PORT"]) if env.get("VNC_PORT") else None,
        )
