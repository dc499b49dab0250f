"""The public API, RunPod Serverless wire-compatible (runpod_protocol.md §2)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from coordinator.api._auth import Auth
from coordinator.api._http import decode_body, json_response, query_int, read_body
from coordinator.api._limits import Route
from coordinator.api._metrics import Metrics
from coordinator.api._throttle import Handler, Throttle, guard
from coordinator.jobs import JobService, JobSettings
from tide.api.endpoints import Endpoint
from tide.api.jobs import FINAL_STATES, JobRequest

__all__ = ["PublicRoutes"]


class PublicRoutes:
    def __init__(
        self,
        *,
        jobs: JobService,
        auth: Auth,
        settings: JobSettings,
        metrics: Metrics,
        endpoints: dict[str, tuple[Endpoint, int]],
        throttle: Throttle,
    ) -> None:
        self._jobs = jobs
        self._auth = auth
        self._throttle = throttle
        self._settings = settings
        self._metrics = metrics
        self._endpoints = endpoints
        self._submitted: dict[str, Any] = {}  # endpoint -> its counter (labels() takes a lock and a lookup)

    def add_to(self, app: web.Application) -> None:
        def add(verb: str, path: str, route: Route | None, handler: Handler) -> None:
            # Every route goes through the guard: it applies the route's
            # per-endpoint limits (None: not limited) to the authenticated client.
            app.router.add_route(verb, path, guard(self._throttle, route, handler))

        add("POST", "/v2/{ep}/run", "run", self.run)
        add("POST", "/v2/{ep}/runsync", "runsync", self.runsync)
        for verb in ("GET", "POST"):
            add(verb, "/v2/{ep}/status/{job}", "status", self.status)
            add(verb, "/v2/{ep}/status-sync/{job}", "status", self.status_sync)
            add(verb, "/v2/{ep}/stream/{job}", "stream", self.stream)
        add("POST", "/v2/{ep}/cancel/{job}", "cancel", self.cancel)
        add("POST", "/v2/{ep}/retry/{job}", None, self.retry)
        add("POST", "/v2/{ep}/purge-queue", "purge-queue", self.purge_queue)
        # add_get: HEAD too, as before.
        app.router.add_get("/v2/{ep}/health", guard(self._throttle, None, self.health))

    def _ep(self, request: web.Request) -> str:
        return request.match_info["ep"]  # authorized by the middleware (_authz)

    def _timeout_ms(self, ep: str) -> int:
        return self._endpoints[ep][0].spec.execution_timeout_ms

    async def _job_request(self, request: web.Request, *, sync: bool) -> tuple[str, JobRequest]:
        ep = self._ep(request)
        limit = self._settings.runsync_limit if sync else self._settings.run_limit
        body = await read_body(request, limit)
        req = decode_body(body, JobRequest, what="job request (it must be a JSON object with an 'input' key)")
        return ep, req

    def _count_submitted(self, ep: str) -> None:
        counter = self._submitted.get(ep)
        if counter is None:
            counter = self._submitted[ep] = self._metrics.jobs_submitted.labels(ep)
        counter.inc()

    async def run(self, request: web.Request) -> web.Response:
        ep, req = await self._job_request(request, sync=False)
        record = await self._jobs.submit(ep, req, sync=False, timeout_ms=self._timeout_ms(ep))
        self._count_submitted(ep)
        return json_response({"id": record.id, "status": "IN_QUEUE"})

    async def runsync(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        wait_ms = query_int(request, "wait", self._settings.runsync_wait_ms, 1000, 300_000)
        ep, req = await self._job_request(request, sync=True)
        envelope = await self._jobs.run_sync(
            ep,
            req,
            timeout_ms=self._timeout_ms(ep),
            wait_s=wait_ms / 1000.0,
            on_submitted=lambda: self._count_submitted(ep),
        )
        if envelope["status"] in FINAL_STATES:
            self._metrics.runsync_seconds.labels(ep).observe(time.perf_counter() - t0)
        return json_response(envelope)

    async def status(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        return json_response(await self._jobs.status(ep, request.match_info["job"]))

    async def status_sync(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        wait_ms = query_int(request, "wait", self._settings.runsync_wait_ms, 0, 300_000)
        return json_response(await self._jobs.wait_final(ep, request.match_info["job"], wait_ms / 1000.0))

    async def stream(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        wait_ms = query_int(request, "wait", 0, 0, 300_000)
        return json_response(await self._jobs.stream(ep, request.match_info["job"], wait_ms / 1000.0))

    async def cancel(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        return json_response(await self._jobs.cancel(ep, request.match_info["job"]))

    async def retry(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        return json_response(await self._jobs.retry(ep, request.match_info["job"]))

    async def purge_queue(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        return json_response(await self._jobs.purge_queue(ep))

    async def health(self, request: web.Request) -> web.Response:
        ep = self._ep(request)
        return json_response(self._jobs.health(ep))
