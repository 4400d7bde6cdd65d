"""The one exception type that route handlers raise to answer ``{"detail": ...}``."""

from __future__ import annotations

import errno

# How an OSError from a workspace operation maps to an HTTP status.
_ERRNO_STATUS = {
    errno.ENOENT: 404,
    errno.EEXIST: 409,
    errno.ENOTEMPTY: 409,
    errno.EISDIR: 409,
    errno.ENOTDIR: 409,
    errno.EINVAL: 400,
    errno.ENAMETOOLONG: 400,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EROFS: 403,
    errno.ENOSPC: 507,
    errno.EDQUOT: 507,
}


class HTTPError(Exception):
    """An error answered as ``status`` with the JSON body ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @classmethod
    def from_oserror(cls, exc: OSError) -> HTTPError:
        status = _ERRNO_STATUS.get(exc.errno or 0, 500)
        what = exc.strerror or str(exc)
        return cls(status, f"{what}: {exc.filename}" if exc.filename else what)


def bad_request(detail: str) -> HTTPError:
    return HTTPError(400, detail)
