"""HTTP plumbing shared by every route module: JSON errors, body decoding,
and credentials.

Every error leaves as JSON ``{"error": "<what to fix>"}`` with the status the
taxonomy assigns (tide/api/errors.py); bad input is a 4xx, never a 500, and a
500 never carries a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from coordinator.api._limits import RateLimited
from coordinator.jobs import decode_json
from coordinator.view import ClusterView
from tide.api.endpoints import ApiKey
from tide.api.errors import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TideError,
    Unauthenticated,
)

__all__ = [
    "Auth",
    "decode_body",
    "error_middleware",
    "json_response",
    "mint_worker_token",
    "query_int",
    "read_body",
]

log = logging.getLogger("tide.coordinator.http")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RateLimited as exc:
        response = json_response({"error": exc.message}, exc.http_status)
        response.headers["Retry-After"] = str(exc.retry_after_s)  # whole seconds (RFC 9110 §10.2.3)
        return response
    except TideError as exc:
        return json_response({"error": exc.message}, exc.http_status)
    except msgspec.ValidationError as exc:
        return json_response({"error": f"invalid request body: {exc}"}, 400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = _http_message(request, exc)
        return json_response({"error": message}, exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": "internal error; the coordinator's log has the details"}, 500)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such route: {request.method} {request.path} (GET /openapi.json lists every route)"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return "request body too large: /run takes at most 10 MB and /runsync 20 MB"
    return exc.reason or "bad request"


async def read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(
            f"request body is {request.content_length} bytes; the limit here is {limit} bytes"
        )
    body = await request.read()
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit here is {limit} bytes")
    return body


def decode_body(body: bytes, type_: type[T], *, what: str) -> T:
    if not body.strip():
        raise InvalidArgument(f"{what} needs a JSON body")
    decoded: T = decode_json(body, what, type_)  # bad JSON and deep nesting: a 400
    return decoded


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"query parameter {name}={raw!r} must be an integer in {lo}..{hi}") from None
    if not lo <= value <= hi:
        raise InvalidArgument(f"query parameter {name}={value} must be in {lo}..{hi}")
    return value


def _presented_key(request: web.Request, *, allow_query: bool) -> str:
    header = request.headers.get("Authorization", "").strip()
    if header.lower().startswith("bearer "):
        header = header[7:].strip()
    if not header and allow_query:
        header = request.query.get("api_key", "")
    if not header:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    return header


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_worker_token(cluster_secret: bytes, ep: str, worker: str) -> str:
    """A worker's credential: valid for one endpoint and one worker id only."""
    mac = hmac.new(cluster_secret, f"{ep}/{worker}".encode(), hashlib.sha256).digest()
    return f"tw1.{base64.urlsafe_b64encode(mac[:24]).decode().rstrip('=')}"


class Auth:
    def __init__(self, view: ClusterView, *, admin_key_hashes: list[str], cluster_secret: bytes) -> None:
        self._view = view
        self._admin = set(admin_key_hashes)
        self.cluster_secret = cluster_secret
        self._worker_tokens: dict[tuple[str, str], str] = {}  # (ep, worker) -> token; saves an HMAC a call

    def _lookup(self, request: web.Request, *, allow_query: bool) -> ApiKey | None:
        """None = the bootstrap admin key; raises if the key is unknown or revoked."""
        digest = hash_key(_presented_key(request, allow_query=allow_query))
        if digest in self._admin:
            return None
        key = self._view.apikeys.get(digest)
        if key is None or key.revoked:
            raise Unauthenticated(
                "API key is not valid (unknown or revoked); create one with 'tide keys create'"
            )
        return key

    def require_admin(self, request: web.Request) -> None:
        key = self._lookup(request, allow_query=True)
        if key is not None and key.scope != "admin":
            raise PermissionDenied(f"key {key.name!r} is not an admin key")

    def require_node_join(self, request: web.Request) -> None:
        """Registering a node takes an admin key or a node-scoped key."""
        key = self._lookup(request, allow_query=False)
        if key is not None and key.scope not in ("admin", "node"):
            raise PermissionDenied(f"key {key.name!r} may not register nodes (needs scope admin or node)")

    def require_client(self, request: web.Request, ep: str) -> ApiKey | None:
        """The key that may use ``ep`` (None = the bootstrap admin key)."""
        key = self._lookup(request, allow_query=True)
        if key is not None and key.scope != "admin" and key.endpoint_ids and ep not in key.endpoint_ids:
            raise PermissionDenied(f"key {key.name!r} may not use endpoint {ep!r}")
        if ep not in self._view.endpoints:
            raise NotFound(f"endpoint {ep!r} not found; 'tide endpoint list' shows the endpoints")
        return key

    def require_worker(self, request: web.Request, ep: str, worker: str) -> None:
        presented = _presented_key(request, allow_query=False)
        expected = self._worker_tokens.get((ep, worker))
        if expected is None:
            if len(self._worker_tokens) > 100_000:
                self._worker_tokens.clear()
            expected = self._worker_tokens[ep, worker] = mint_worker_token(self.cluster_secret, ep, worker)
        if not hmac.compare_digest(presented, expected):
            raise Unauthenticated(f"worker token is not valid for worker {worker!r} of endpoint {ep!r}")
