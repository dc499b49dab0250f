"""The batch rows of the route table (``_routes_table``): RunPod's batch jobs API plus Tide's
JSONL upload and JSONL results."""

from __future__ import annotations

from coordinator.api._route_doc import Q, Raw, RouteDoc
from tide.api import batches as B

__all__ = ["batch_rows"]

_CREATE_QUERY = (
    Q("name", "display name"),
    Q("slaHours", "deadline in hours after finalize (a number)"),
    Q("maxPricePerGpuHour", "price cap, USD per GPU-hour (a number)"),
    Q("finalize", "'true': a JSONL upload starts processing at once"),
)
_JSONL = Raw({"type": "string", "description": "one JSON object a line"}, content_type="application/x-ndjson")


def batch_rows() -> list[RouteDoc]:
    b = "/v2/{ep}/batch"
    one = b + "/{batch}"
    return [
        RouteDoc(
            "POST",
            b,
            "client",
            "createBatch",
            "Create a DRAFT batch: a JSON array of {input}, or JSONL (Content-Type application/x-ndjson)",
            {201: B.BatchRef},
            list[B.BatchItem],
            _CREATE_QUERY,
            (400, 413, 429),
        ),
        RouteDoc(
            "GET",
            b,
            "client",
            "listBatches",
            "The endpoint's batches, newest first",
            {200: list[B.BatchSummary]},
        ),
        RouteDoc(
            "GET",
            one,
            "client",
            "getBatch",
            "A batch's summary, SLA and cost",
            {200: B.BatchSummary},
            errors=(404,),
        ),
        RouteDoc(
            "PUT",
            one,
            "client",
            "updateBatch",
            "Change a batch's attributes",
            {200: B.BatchRef},
            B.BatchAttributes,
            errors=(400, 404, 409),
        ),
        RouteDoc(
            "POST",
            one + "/requests",
            "client",
            "appendBatchRequests",
            "Add requests to a DRAFT batch",
            {200: B.BatchRef},
            B.BatchAppend,
            errors=(400, 404, 409, 413),
        ),
        RouteDoc(
            "GET",
            one + "/requests",
            "client",
            "getBatchRequests",
            "A page of per-request results",
            {200: B.BatchResultsPage},
            query=(Q("offset", "first request", 0, 1 << 40), Q("limit", "requests per page", 1, 1000)),
            errors=(400, 404),
        ),
        RouteDoc(
            "DELETE",
            one + "/requests/{request}",
            "client",
            "deleteBatchRequest",
            "Remove a request from a DRAFT batch",
            {200: B.BatchRef},
            errors=(400, 404, 409),
        ),
        RouteDoc(
            "POST",
            one + "/finalize",
            "client",
            "finalizeBatch",
            "Start processing a batch",
            {200: B.BatchRef},
            errors=(404, 409),
        ),
        RouteDoc(
            "POST",
            one + "/cancel",
            "client",
            "cancelBatch",
            "Cancel queued requests (not billed); running ones finish",
            {200: B.BatchRef},
            errors=(404, 409),
        ),
        RouteDoc(
            "GET",
            one + "/results",
            "client",
            "getBatchResults",
            "Every result as JSONL",
            {200: _JSONL},
            errors=(404,),
        ),
    ]
