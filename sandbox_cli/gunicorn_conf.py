"""gunicorn's config for the API (``gunicorn -c python:sandbox_cli.gunicorn_conf``).

- ``logconfig_dict``: the fleet's logging (sandbox_core.logs), so sandbox_api's INFO lines are kept
  and formatted like every other process's, LOG_FORMAT=json included; the access log only with DEBUG.
- ``post_fork``: each API worker dies with its master, even a master killed with SIGKILL (gunicorn
  alone notices only a second or so later, between requests).
"""

from __future__ import annotations

from sandbox_core import logs
from sandbox_core.settings import load_settings

from .orphans import die_with_parent

logconfig_dict = logs.dict_config(load_settings(), role="api")


def post_fork(server, worker) -> None:
    die_with_parent(parent=server.pid)
