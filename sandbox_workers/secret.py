"""Where a sandbox's own secret (the bearer its agent accepts) lives, and where it does not.

The secret authenticates the host's worker to the agent on the sandbox's loopback port. Images
built by the fleet (their label ``io.sandbox-fleet.agent-auth=sha256``, from the base image) get
only its sha256 in ``SECRET_TOKEN_SHA256``, so nothing a tool call can read inside the sandbox
(``/proc/1/environ``, ``env``) holds it; upstream images, which read ``SECRET_TOKEN``, still get
that. The plain value is kept in Redis and in a container label, which is visible on the host
(``docker inspect``) and never inside the container: ``reconcile.adopt`` reads it back from there
after a Redis loss.
"""

from __future__ import annotations

import hashlib

from backends.base import Backend, Container

#: Image label: the image's agent accepts SECRET_TOKEN_SHA256 (value "sha256").
LABEL_AGENT_AUTH = "io.sandbox-fleet.agent-auth"
#: Container label holding the plain secret, for adoption after a Redis loss.
LABEL_SECRET = "io.sandbox-fleet.secret"


def environment(backend: Backend, image: str, token: str) -> dict[str, str]:
    """The variables that give a sandbox of ``image`` its secret."""
    if backend.image_labels(image).get(LABEL_AGENT_AUTH) == "sha256":
        return {"SECRET_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest()}
    return {"SECRET_TOKEN": token}


def labels(token: str) -> dict[str, str]:
    return {LABEL_SECRET: token}


def token_of(container: Container | None) -> str | None:
    """A container's secret: its label, else (sandboxes created before the label) its env."""
    if container is None:
        return None
    return (container.labels or {}).get(LABEL_SECRET) or \
        (container.environment or {}).get("SECRET_TOKEN")
