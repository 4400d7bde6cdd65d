"""Sandbox ids in upstream's shape: 25 characters of 0-9a-z, prefixed into the container name."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.digits + string.ascii_lowercase


def new_session_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(25))
