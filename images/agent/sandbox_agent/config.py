"""Settings of the agent, read from the environment once at start-up."""

from __future__ import annotations

import os

# Built into CPython (_sha256 up to 3.11, _sha2 from 3.12); hashlib would map OpenSSL (~4 MiB).
try:
    from _sha256 import sha256 as _sha256
except ImportError:
    from _sha2 import sha256 as _sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_TOKEN = "secret_token123"
#: What the fleet's own images get instead of SECRET_TOKEN: its sha256, so nothing a tool can read
#: inside the sandbox (/proc/1/environ, the agent's environment) holds the secret itself.
TOKEN_HASH_VAR = "SECRET_TOKEN_SHA256"
SECRET_VARS = ("SECRET_TOKEN", TOKEN_HASH_VAR)

DEFAULT_TIMEOUT = 60.0
MCP_CONFIG_PATHS = (
    "/agentscope_runtime/mcp_server_configs.json",  # where upstream images put it
    "/opt/sandbox-agent/mcp_server_configs.json",  # where sandbox-fleet images put it
)


def sha256(data: bytes) -> bytes:
    return _sha256(data).digest()


def _token_digest(env: Mapping[str, str]) -> bytes:
    hashed = env.get(TOKEN_HASH_VAR, "").strip()
    if not hashed:
        return sha256(env.get("SECRET_TOKEN", DEFAULT_TOKEN).encode("utf-8", "surrogateescape"))
    try:
        digest = bytes.fromhex(hashed)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"{TOKEN_HASH_VAR} must be 64 hex digits (a sha256), got {len(hashed)} characters")
    return digest


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
    that the upstream manager sets for the container, else 60 s. ``token_digest`` is the sha256 of
    the bearer token the agent accepts: given as ``SECRET_TOKEN_SHA256`` (the fleet's images), or
    computed from ``SECRET_TOKEN`` (upstream's way, still served). ``child_env`` is the environment
    of the processes the agent starts (shell, kernel, MCP servers): the agent's own minus both.
    ``novnc_dir`` and ``vnc_port`` (the gui image sets ``NOVNC_DIR`` and ``VNC_PORT``) turn on the
    desktop routes ``/vnc/*`` and ``/websockify``.
    """

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = 80,
        token_digest: bytes | None = None,
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
        self.token_digest = token_digest or sha256(DEFAULT_TOKEN.encode())
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
            token_digest=_token_digest(env),
            workspace=env.get("WORKSPACE_DIR", "/workspace"),
            tool_timeout=tool_timeout,
            mcp_timeout=_float(env, "MCP_TIMEOUT", tool_timeout),
            kernel_start_timeout=_float(env, "KERNEL_START_TIMEOUT", 30.0),
            idle_timeout=_float(env, "AGENT_IDLE_TIMEOUT", 300.0),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            mcp_config_paths=tuple(p for p in paths.split(os.pathsep) if p) if paths is not None
            else MCP_CONFIG_PATHS,
            child_env={k: v for k, v in env.items() if k not in SECRET_VARS},
            novnc_dir=env.get("NOVNC_DIR") or None,
            vnc_port=int(env["VNC_PORT"]) if env.get("VNC_PORT") else None,
        )
