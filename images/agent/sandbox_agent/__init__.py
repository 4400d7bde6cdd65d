"""sandbox-agent: the one-process in-sandbox server of sandbox-fleet.

It speaks the agentscope-runtime in-container protocol (shell and IPython tools, MCP, workspace files,
git watcher) with the standard library only. Run it with ``python3 -m sandbox_agent``.
"""

__version__ = "0.1.0"
