"""The HTTP server around the app: limits and timeouts at the connection level,
and JSON for the errors aiohttp's own parser answers.

aiohttp answers a request it cannot parse (a request line over
``max_line_size``, a header over ``max_field_size``, more than ``max_headers``
headers, not HTTP at all) before any middleware runs, in text/plain; our
``RequestHandler`` answers them as JSON ``{"error": ...}`` like every other error.

Slow clients (slowloris): a connection that has not sent a whole request head
within ``header_timeout_s`` (new, or idle between requests) is closed: it is
aiohttp's keep-alive timer, which since 3.10 also runs from the connection's
start.  A request body that has not arrived within ``body_timeout_s`` is
answered 408 and its connection closed (``body_timeout_middleware``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = ["HttpLimits", "body_timeout_middleware", "make_runner"]

log = logging.getLogger("tide.coordinator.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_line_size: int = 8190  # the request line (method, URL, version)
    max_field_size: int = 8190  # one header
    max_headers: int = 128


class _JsonErrors(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises if a response was sent
        if status >= 500:
            text = "internal error; the coordinator's log has the details"
        else:
            text = (
                f"bad HTTP request: {message or 'cannot parse it'} (limits: request line and each header "
                f"{self.max_line_size} bytes, {self.max_headers} headers)"
            )
        response = web.json_response({"error": text}, status=status)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrors(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _Server(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


def make_runner(app: web.Application, limits: HttpLimits, **kwargs: Any) -> web.AppRunner:
    """An AppRunner for ``app`` with ``limits`` (``kwargs``: AppRunner's own)."""
    return _Runner(
        app,
        keepalive_timeout=limits.header_timeout_s,
        max_line_size=limits.max_line_size,
        max_field_size=limits.max_field_size,
        max_headers=limits.max_headers,
        **kwargs,
    )


class _BodyTimeout(Exception):
    pass


def body_timeout_middleware(timeout_s: float) -> Any:
    """A request body not received within ``timeout_s`` of the request's head is a 408.
    The handler reads as it likes (after its checks: a throttled request counts as in
    flight while its body comes); a timer fails that read if the body is late."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = request.content
        if body.is_eof():
            return await handler(request)

        def expire() -> None:
            if not body.is_eof():
                body.set_exception(_BodyTimeout())

        timer = asyncio.get_running_loop().call_later(timeout_s, expire)
        try:
            return await handler(request)
        except _BodyTimeout:
            log.info("closing %s: its body did not arrive within %g s", request.remote, timeout_s)
            response = web.json_response(
                {"error": f"request body not received within {timeout_s:g} s"}, status=408
            )
            response.force_close()
            return response
        finally:
            timer.cancel()

    return middleware
