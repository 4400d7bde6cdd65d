"""A stand-in for AgentScope's in-sandbox MCP gateway (tests/e2b/test_agentscope_workspace.py).

The real one (``agentscope/workspace/_mcp_gateway/_mcp_gateway_app.py``) runs on fastapi,
uvicorn and mcp in a venv that AgentScope's E2B bootstrap installs with ``sudo apt-get`` and uv
from astral.sh: neither is reachable from a sandbox on this machine. This one answers the only
call a workspace makes of a gateway with no MCP registered, ``GET /health``, with the standard
library alone. The test uploads it where the bootstrap would have put the real one.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = (200, {"status": "ok"}) if self.path == "/health" else \
            (404, {"detail": f"{self.path}: the stand-in gateway serves /health only"})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
