"""OpenAI-compatible routes on every endpoint: ``/v2/{ep}/openai/v1/chat/completions``,
``/completions``, ``/embeddings`` (POST) and ``/models`` (GET), as RunPod serves them for
its vLLM worker.  Each request is one job (``_openai`` says what its input is); the answer
is the worker's OpenAI object, or with ``"stream": true`` Server-Sent Events relayed from
the job's stream as the worker writes it, ending with ``data: [DONE]``.

Same keys, scopes and API limits as the job API (route class ``runsync``: a caller waits
for each).  Every error is OpenAI's shape (the error middleware formats the ones raised
here).  A streaming client that goes away cancels its job; a non-streaming one is noticed
within 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import msgspec
from aiohttp import web

from coordinator.api._http import json_response, read_body
from coordinator.api._openai import DONE, answer_of, check_body, job_input, sse_events
from coordinator.api._throttle import Handler, Throttle, guard
from coordinator.jobs import JobService, JobSettings, decode_json
from tide.api.endpoints import Endpoint
from tide.api.errors import InvalidArgument
from tide.api.jobs import FINAL_STATES, JobRequest

__all__ = ["OpenAIRoutes"]

BASE: Final = "/v2/{ep}/openai/v1"
_POLL_S: Final = 5.0  # how often a waiting non-streamed request checks that its client is still there
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class OpenAIRoutes:
    def __init__(
        self,
        *,
        jobs: JobService,
        throttle: Throttle,
        settings: JobSettings,
        endpoints: dict[str, tuple[Endpoint, int]],
    ) -> None:
        self._jobs = jobs
        self._throttle = throttle
        self._settings = settings
        self._endpoints = endpoints

    def add_to(self, app: web.Application) -> None:
        def route(path: str) -> Handler:
            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._post(request, path)

            return guard(self._throttle, "runsync", handle)

        for path in ("chat/completions", "completions", "embeddings"):
            app.router.add_post(f"{BASE}/{path}", route(path))
        app.router.add_get(f"{BASE}/models", guard(self._throttle, "runsync", self._models))

    async def _post(self, request: web.Request, path: str) -> web.StreamResponse:
        raw = await read_body(request, self._settings.runsync_limit)
        if not raw.strip():
            raise InvalidArgument(f"/openai/v1/{path} needs a JSON body (OpenAI's request)")
        body = check_body(path, decode_json(raw, f"/openai/v1/{path} request"))
        req = JobRequest(input=job_input(path, body))
        if body.get("stream"):
            return await self._stream(request, req)
        return await self._answer(request, req)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, JobRequest(input=job_input("models", {})))

    def _timeout_ms(self, ep: str) -> int:
        return self._endpoints[ep][0].spec.execution_timeout_ms

    async def _answer(self, request: web.Request, req: JobRequest) -> web.StreamResponse:
        ep = request.match_info["ep"]
        envelope = await self._jobs.run_sync(
            ep, req, timeout_ms=self._timeout_ms(ep), wait_s=_POLL_S, on_submitted=lambda: None
        )
        job = envelope["id"]
        while envelope["status"] not in FINAL_STATES:
            if _gone(request):
                await self._cancel(ep, job)
                return web.Response(status=499)  # nobody reads it (nginx's "client closed request")
            envelope = await self._jobs.wait_final(ep, job, _POLL_S)
        chunks: list[Any] = []
        if envelope.get("output") in (None, []):
            chunks = (await self._jobs.stream(ep, job))["stream"]
        status, body = answer_of(envelope, chunks)
        response = json_response(body, status)
        response.headers["X-Request-Id"] = job  # the openai SDK shows it as ``_request_id``
        return response

    async def _stream(self, request: web.Request, req: JobRequest) -> web.StreamResponse:
        ep = request.match_info["ep"]
        record = await self._jobs.submit(ep, req, sync=True, timeout_ms=self._timeout_ms(ep))
        relay = _Relay(request, record.id)
        try:
            async for chunks, final in self._jobs.follow(ep, record.id):
                if relay.response is None and final is not None and not chunks:
                    # Nothing streamed: the handler returned its whole answer, or failed
                    # before its first chunk (an HTTP error the client can act on).
                    status, body = answer_of(final, [])
                    if status != 200:
                        return relay.error(body, status)
                    chunks = [{"output": body}]
                ended = await relay.send(chunks)
                if final is not None and not ended and final["status"] != "COMPLETED":
                    await relay.send_error(answer_of(final, [])[1])  # mid-stream: an error event
                if ended or final is not None:
                    break
            return await relay.finish()
        except (ConnectionResetError, asyncio.CancelledError):
            await asyncio.shield(self._cancel(ep, record.id))
            raise

    async def _cancel(self, ep: str, job: str) -> None:
        with contextlib.suppress(Exception):  # already final or gone: nothing to stop
            await self._jobs.cancel(ep, job)


class _Relay:
    """One SSE answer: opened at the first event, ``[DONE]`` exactly once at the end."""

    def __init__(self, request: web.Request, job: str) -> None:
        self._request = request
        self._job = job
        self.response: web.StreamResponse | None = None
        self._done = False

    def error(self, body: dict[str, Any], status: int) -> web.Response:
        response = json_response(body, status)
        response.headers["X-Request-Id"] = self._job
        return response

    async def send(self, chunks: list[Any]) -> bool:
        """Writes the chunks' events; True once the worker's events ended the stream."""
        events: list[bytes] = []
        for chunk in chunks:
            more, self._done = sse_events(chunk.get("output") if isinstance(chunk, dict) else chunk)
            events += more
            if self._done:
                break
        if events:
            response = await self._open()
            await response.write(b"".join(events))
        return self._done

    async def send_error(self, body: dict[str, Any]) -> None:
        response = await self._open()
        await response.write(b"data: " + msgspec.json.encode(body) + b"\n\n")
        self._done = True  # the openai SDK raises on an error event; no [DONE] after it

    async def finish(self) -> web.StreamResponse:
        response = await self._open()
        if not self._done:
            await response.write(DONE)
        await response.write_eof()
        return response

    async def _open(self) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(headers={**_SSE_HEADERS, "X-Request-Id": self._job})
            await self.response.prepare(self._request)
        return self.response


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
