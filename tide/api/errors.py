"""Tide's closed error taxonomy, shared by every package.

    TideError                      base; never raised directly
    ├── NotFound                   the named object does not exist            (404)
    ├── AlreadyExists              an object with that name exists            (409)
    ├── InvalidArgument            the caller sent something wrong            (400)
    ├── PayloadTooLarge            the body is over a documented limit        (413)
    ├── Unauthenticated            no key, or a wrong or revoked key          (401)
    ├── PermissionDenied           the key is valid but not for this object   (403)
    ├── FailedPrecondition         valid, but not in the object's state now   (409)
    ├── Conflict                   a revision moved under us; re-read, retry  (409)
    ├── ResourceExhausted          no capacity (GPU, slice, quota, rate)      (429)
    ├── Unavailable                a dependency is down; retry later          (503)
    └── Internal                   a bug; the message is for operators        (500)

Adapters translate foreign exceptions (grpc, etcd, NVML, OS errors) into these
at the boundary with ``raise ... from``.  Each class knows whether a retry of
the same call can succeed (``retryable``) and its HTTP status, so there is one
table of statuses: the classes themselves.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "Conflict",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ResourceExhausted",
    "TideError",
    "Unauthenticated",
    "Unavailable",
]


class TideError(Exception):
    """Base of the taxonomy. ``message`` says what happened and what to do next."""

    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(TideError):
    http_status = 404


class AlreadyExists(TideError):
    http_status = 409


class InvalidArgument(TideError):
    http_status = 400


class PayloadTooLarge(TideError):
    http_status = 413


class Unauthenticated(TideError):
    http_status = 401


class PermissionDenied(TideError):
    http_status = 403


class FailedPrecondition(TideError):
    http_status = 409


class Conflict(TideError):
    retryable = True
    http_status = 409


class ResourceExhausted(TideError):
    retryable = True
    http_status = 429


class Unavailable(TideError):
    retryable = True
    http_status = 503


class Internal(TideError):
    http_status = 500
