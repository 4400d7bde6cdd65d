"""One exception family for the whole fleet (docker-py's habit).

Each carries the HTTP status the API answers with and a ``detail`` a user can act on. Backends
translate their runtime's errors into these with ``raise ... from e``; nothing above ``backends/``
sees a docker or kubernetes exception.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error the fleet raises on purpose."""

    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> SandboxError:
        """Rebuild an error that travelled through a job reply."""
        kind = _KINDS.get(data.get("error", ""), SandboxError)
        return kind(data.get("detail", "unknown error"))


class SettingsError(SandboxError):
    """A setting has a value the fleet cannot use; start-up stops."""


class BadRequest(SandboxError):
    status = 400


class NotFound(SandboxError):
    status = 404


class Conflict(SandboxError):
    status = 409


class CapacityExceeded(SandboxError):
    """MAX_SANDBOX_INSTANCES or the host's port range is used up."""

    status = 503


class Unavailable(SandboxError):
    """A backend, a worker or a sandbox did not answer in time."""

    status = 503


class BackendError(SandboxError):
    """The container runtime refused or failed an operation."""

    status = 502


class PortTaken(BackendError):
    """The host port chosen for a sandbox was bound by something else first: try another."""


_KINDS = {k.__name__: k for k in (SandboxError, SettingsError, BadRequest, NotFound, Conflict,
                                  CapacityExceeded, Unavailable, BackendError, PortTaken)}
