"""The batch API (runpod_protocol.md §3, RunPod's batch jobs) and Tide's JSONL extensions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

from coordinator.api._http import decode_body, json_response, query_int, read_body
from coordinator.api._throttle import Throttle, guard
from coordinator.batches import BatchReads, BatchService, BatchSettings
from tide.api.batches import BatchAppend, BatchAttributes, BatchItem
from tide.api.errors import InvalidArgument, PayloadTooLarge

__all__ = ["JSONL_TYPES", "BatchRoutes"]

JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
_MAX_PAGE = 1000


class BatchRoutes:
    def __init__(
        self, *, batches: BatchService, reads: BatchReads, settings: BatchSettings, throttle: Throttle
    ) -> None:
        self._batches = batches
        self._reads = reads
        self._settings = settings
        self._throttle = throttle

    def add_to(self, app: web.Application) -> None:
        b = "/v2/{ep}/batch"
        for verb, path, handler in (
            ("POST", b, self.create),
            ("GET", b, self.list),
            ("GET", b + "/{batch}", self.get),
            ("PUT", b + "/{batch}", self.update),
            ("POST", b + "/{batch}/requests", self.append),
            ("GET", b + "/{batch}/requests", self.requests),
            ("DELETE", b + "/{batch}/requests/{request}", self.delete_request),
            ("POST", b + "/{batch}/finalize", self.finalize),
            ("POST", b + "/{batch}/cancel", self.cancel),
            ("GET", b + "/{batch}/results", self.results),
        ):
            app.router.add_route(verb, path, guard(self._throttle, None, handler))

    async def create(self, request: web.Request) -> web.Response:
        ep = request.match_info["ep"]
        attrs = _attrs_from_query(request)
        if request.content_type in JSONL_TYPES:
            finalize = request.query.get("finalize", "") in ("1", "true")
            ref = await self._batches.create_jsonl(ep, self._lines(request), attrs, finalize=finalize)
        else:
            body = await read_body(request, self._settings.append_limit)
            items = decode_body(body, list[BatchItem], what='batch (a JSON array of {"input": ...})')
            ref = await self._batches.create(ep, items, attrs)
        return json_response(msgspec.to_builtins(ref), 201)

    async def _lines(self, request: web.Request) -> AsyncIterator[bytes]:
        """The body's lines; a line is cut at the request limit (it then fails alone) so one
        huge line cannot hold the whole body in memory."""
        seen = 0
        tail = b""
        async for chunk in request.content.iter_chunked(1 << 20):
            seen += len(chunk)
            if seen > self._settings.upload_limit:
                raise PayloadTooLarge(
                    f"a JSONL upload takes at most {self._settings.upload_limit} bytes ([batch] upload-limit)"
                )
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            if len(tail) > self._settings.request_limit + 1:
                tail = tail[: self._settings.request_limit + 1]
            for line in lines:
                yield line
        if tail:
            yield tail

    async def list(self, request: web.Request) -> web.Response:
        return json_response(msgspec.to_builtins(await self._reads.all_of(request.match_info["ep"])))

    async def get(self, request: web.Request) -> web.Response:
        m = request.match_info
        return json_response(msgspec.to_builtins(await self._reads.summary(m["ep"], m["batch"])))

    async def update(self, request: web.Request) -> web.Response:
        m = request.match_info
        body = await read_body(request, 64 * 1024)
        attrs = decode_body(body, BatchAttributes, what="batch attributes")
        return json_response(msgspec.to_builtins(await self._batches.update(m["ep"], m["batch"], attrs)))

    async def append(self, request: web.Request) -> web.Response:
        m = request.match_info
        body = await read_body(request, self._settings.append_limit)
        append = decode_body(body, BatchAppend, what='requests ({"requests": [{"input": ...}]})')
        return json_response(
            msgspec.to_builtins(await self._batches.append(m["ep"], m["batch"], append.requests))
        )

    async def requests(self, request: web.Request) -> web.Response:
        m = request.match_info
        offset = query_int(request, "offset", 0, 0, 1 << 40)
        limit = query_int(request, "limit", 50, 1, _MAX_PAGE)
        return json_response(await self._reads.page(m["ep"], m["batch"], offset, limit))

    async def delete_request(self, request: web.Request) -> web.Response:
        m = request.match_info
        ref = await self._batches.delete_request(m["ep"], m["batch"], m["request"])
        return json_response(msgspec.to_builtins(ref))

    async def finalize(self, request: web.Request) -> web.Response:
        m = request.match_info
        return json_response(msgspec.to_builtins(await self._batches.finalize(m["ep"], m["batch"])))

    async def cancel(self, request: web.Request) -> web.Response:
        m = request.match_info
        return json_response(msgspec.to_builtins(await self._batches.cancel(m["ep"], m["batch"])))

    async def results(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        chunks = self._reads.stream(m["ep"], m["batch"])
        first = await anext(chunks, b"")  # an unknown batch is a 404 before the 200 starts
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


def _attrs_from_query(request: web.Request) -> BatchAttributes:
    q: dict[str, Any] = {}
    if "name" in request.query:
        q["name"] = request.query["name"]
    for key in ("slaHours", "maxPricePerGpuHour"):
        if key in request.query:
            try:
                q[key] = float(request.query[key])
            except ValueError:
                raise InvalidArgument(
                    f"query parameter {key}={request.query[key]!r} must be a number"
                ) from None
    return msgspec.convert(q, BatchAttributes)
