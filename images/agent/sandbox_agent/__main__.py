"""``python3 -m sandbox_agent``: serve the in-container protocol on ``AGENT_HOST:AGENT_PORT``."""

from __future__ import annotations

import logging
import os
import signal
import sys

from .init import become_init


def main() -> int:
    become_init()
    from .app import App
    from .config import Settings
    from .httpd import make_server

    settings = Settings.from_env(os.environ)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("sandbox_agent")
    os.makedirs(settings.workspace, exist_ok=True)
    app = App(settings)
    server = make_server(settings.host, settings.port, app, settings.idle_timeout)

    def stop(signum: int, _frame: object) -> None:
        # Runs in the main thread, which waits in serve_forever(): leave it by raising.
        log.info("signal %d: shutting down", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    log.info("sandbox-agent listening on %s:%d (workspace %s, tool timeout %ss)",
             host, port, settings.workspace, settings.tool_timeout)
    try:
        server.serve_forever(poll_interval=None)
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
