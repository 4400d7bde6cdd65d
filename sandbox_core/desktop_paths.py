"""Which paths the desktop token opens: noVNC's static files under ``vnc/``, nothing else.

Checked on the path as the API decoded it, and again by the worker before it calls the agent, so
no layer (werkzeug's ``%``-decoding, urllib3's dot-segment removal) can turn a desktop request
into another agent route. noVNC's files use only these characters; anything else is refused.
"""

from __future__ import annotations

import re

#: ``vnc/`` then segments of letters, digits, ``_``, ``-`` and ``.`` that do not start with a dot
#: (so no ``.``, ``..`` or hidden file), with no ``%``, ``?``, ``#``, ``\\``, NUL or empty segment.
_DESKTOP_PATH = re.compile(r"vnc(?:/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){1,16}")


def desktop_path(path: str) -> str | None:
    """The path if the desktop token may open it, else None."""
    return path if _DESKTOP_PATH.fullmatch(path) else None
