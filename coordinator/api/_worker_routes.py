"""The worker API that unmodified ``runpod.serverless.start`` workers call
(runpod_protocol.md §1): job-take(-batch), job-done, job-stream, ping, job-stop.

Workers authenticate with their own token (``RUNPOD_AI_API_KEY``), valid for
one endpoint (its generation) and one worker id while the worker is assigned
(``_auth``; checked by the authorization middleware before these handlers
run).  job-take long-polls and answers 204 when nothing came; 429 would make
the SDK sleep 5 s, so it is never used for "empty".
"""

from __future__ import annotations

from aiohttp import web

from coordinator.api._auth import Auth
from coordinator.api._http import json_response, query_int, read_body
from coordinator.api._metrics import Metrics
from coordinator.jobs import JobSettings, WorkerService
from tide.api.errors import PayloadTooLarge

__all__ = ["WorkerRoutes"]


class WorkerRoutes:
    def __init__(
        self, *, workers: WorkerService, auth: Auth, settings: JobSettings, metrics: Metrics
    ) -> None:
        self._workers = workers
        self._auth = auth
        self._settings = settings
        self._metrics = metrics

    def add_to(self, app: web.Application) -> None:
        r = app.router
        # aiohttp tries /v2/{ep}/... routes in the order added: the per-job ones first.
        r.add_post("/v2/{ep}/job-done/{worker}/{job}", self.done)
        r.add_get("/v2/{ep}/job-take-batch/{worker}", self.take_batch)
        r.add_get("/v2/{ep}/job-take/{worker}", self.take)
        r.add_post("/v2/{ep}/job-stream/{worker}/{job}", self.stream)
        r.add_get("/v2/{ep}/ping/{worker}", self.ping)
        r.add_get("/v2/{ep}/job-stop/{worker}", self.stop)

    def _who(self, request: web.Request) -> tuple[str, str]:
        return request.match_info["ep"], request.match_info["worker"]

    async def take(self, request: web.Request) -> web.StreamResponse:
        ep, worker = self._who(request)
        jobs = await self._workers.take(ep, worker, 1, self._settings.take_wait_s)
        if not jobs:
            return web.Response(status=204)
        self._metrics.jobs_taken.labels(ep).inc()
        return json_response(jobs[0])

    async def take_batch(self, request: web.Request) -> web.StreamResponse:
        ep, worker = self._who(request)
        n = query_int(request, "batch_size", 1, 1, 1024)
        jobs = await self._workers.take(ep, worker, n, self._settings.take_wait_s)
        if not jobs:
            return web.Response(status=204)
        self._metrics.jobs_taken.labels(ep).inc(len(jobs))
        return json_response(jobs)

    async def done(self, request: web.Request) -> web.Response:
        # RunPod workers send JSON labelled application/x-www-form-urlencoded:
        # read the raw bytes, never the form parser.
        ep, worker = self._who(request)
        try:
            body = await read_body(request, self._settings.result_limit)
        except PayloadTooLarge as exc:
            # The SDK drops a result answered with a 4xx: fail the job with the
            # reason now rather than let it look lost and run again.
            reason = f"result not stored: {exc.message}"
            await self._workers.reject(ep, worker, request.match_info["job"], reason)
            raise
        # Not request.query: its parse costs more than the rest of this route's own code.
        is_stream = "isStream=true" in request.rel_url.raw_query_string.split("&")
        answer = await self._workers.done(ep, worker, request.match_info["job"], body, is_stream=is_stream)
        return json_response(answer)

    async def stream(self, request: web.Request) -> web.Response:
        ep, worker = self._who(request)
        body = await read_body(request, self._settings.result_limit)
        return json_response(await self._workers.stream_put(ep, worker, request.match_info["job"], body))

    async def ping(self, request: web.Request) -> web.Response:
        ep, worker = self._who(request)
        job_ids = [j for j in request.query.get("job_id", "").split(",") if j]
        unhealthy = ""
        if request.query.get("status") == "unhealthy":
            check = request.query.get("check", "?")
            unhealthy = f"fitness check {check} failed: {request.query.get('reason', '')}"[:300]
        await self._workers.ping(ep, worker, job_ids, unhealthy)
        return json_response({"ok": True})

    async def stop(self, request: web.Request) -> web.StreamResponse:
        _, worker = self._who(request)
        jobs = await self._workers.stop_signals(worker, self._settings.stop_wait_s)
        if not jobs:
            return web.Response(status=204)
        return json_response({"jobsToStop": jobs})
