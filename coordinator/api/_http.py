"""HTTP plumbing shared by every route module: JSON errors and body decoding
(credentials: ``_auth``; who may call what: ``_authz``).

Every error leaves as JSON ``{"error": "<what to fix>"}`` with the status the
taxonomy assigns (tide/api/errors.py); bad input is a 4xx, never a 500, and a
500 never carries a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from coordinator.api._limits import RateLimited
from coordinator.api._openai import OPENAI_PATH
from coordinator.api._openai import error_body as openai_error
from coordinator.jobs import decode_json
from tide.api.errors import (
    InvalidArgument,
    PayloadTooLarge,
    TideError,
)

__all__ = ["decode_body", "error_middleware", "json_response", "query_int", "read_body"]

log = logging.getLogger("tide.coordinator.http")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def _error(request: web.Request, message: str, status: int) -> web.Response:
    # The OpenAI-compatible routes answer OpenAI's error shape, so the openai SDKs raise
    # their own exceptions; /graphql GraphQL's; every other route answers {"error": "..."}.
    if OPENAI_PATH.match(request.path):
        return json_response(openai_error(message, status), status)
    if request.path == "/graphql":  # RunPod's management API: GraphQL's error shape
        return json_response({"errors": [{"message": message}]}, status)
    return json_response({"error": message}, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RateLimited as exc:
        response = _error(request, exc.message, exc.http_status)
        response.headers["Retry-After"] = str(exc.retry_after_s)  # whole seconds (RFC 9110 §10.2.3)
        return response
    except TideError as exc:
        return _error(request, exc.message, exc.http_status)
    except msgspec.ValidationError as exc:
        return _error(request, f"invalid request body: {exc}", 400)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(request, _http_message(request, exc), exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(request, "internal error; the coordinator's log has the details", 500)


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such route: {request.method} {request.path} (GET /openapi.json lists every route)"
    if exc.status == 405:
        return f"method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return "request body too large: /run takes at most 10 MB, /runsync and /openai 20 MB"
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
