"""The HTTP API: agentscope-runtime-compatible RPC routes in front of the fleet."""

from .app import create_app

__all__ = ["create_app"]
