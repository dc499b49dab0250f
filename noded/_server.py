"""noded's own small HTTP server: worker logs for ``tide logs`` (the
coordinator proxies to it with the node's credential) and a health check."""

from __future__ import annotations

import hmac
import socket
from collections.abc import Callable

from aiohttp import web

from noded.runtime import ContainerRuntime
from tide.api.errors import NotFound

__all__ = ["NodeServer"]


class NodeServer:
    def __init__(
        self, runtime: ContainerRuntime, token: Callable[[], str], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._runtime = runtime
        self._token = token
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/workers/{worker}/logs", self._logs)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.create_server((self._host, self._port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.address = f"http://{self._host}:{sock.getsockname()[1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _logs(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), self._token()):
            return web.json_response({"error": "node credential required"}, status=401)
        worker = request.match_info["worker"]
        try:
            tail = max(1, min(10_000, int(request.query.get("tail", "100"))))
        except ValueError:
            return web.json_response({"error": "tail must be an integer"}, status=400)
        try:
            lines = await self._runtime.logs(worker, tail=tail)
        except NotFound:
            return web.json_response({"error": f"worker {worker!r} has no logs on this node"}, status=404)
        return web.json_response({"workerId": worker, "lines": lines})
