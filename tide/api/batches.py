"""Batch API wire types: RunPod's batch jobs API (runpod_protocol.md §3) plus Tide's extensions.

RunPod's shape first: ``POST /v2/{ep}/batch`` with a top-level array of ``{"input": ...}``,
appends while DRAFT, finalize, cancel, a summary with ``requestTotal``/``requestCompleted``/...
and ``createdAt`` in epoch ms, and paginated per-request results.  Tide adds a JSONL upload
(millions of requests), ``slaHours`` and a price cap as attributes, and ``sla``/``cost`` objects
in the summary.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "BatchAppend",
    "BatchAttributes",
    "BatchCost",
    "BatchItem",
    "BatchRef",
    "BatchRequestResult",
    "BatchResultsPage",
    "BatchSla",
    "BatchState",
    "BatchSummary",
    "RequestState",
]

BatchState = Literal["DRAFT", "FINALIZED", "FAILED", "CANCELLED"]
RequestState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]

_Name = Annotated[str, Meta(max_length=191)]


class BatchItem(msgspec.Struct, frozen=True, kw_only=True):
    """One request of a batch (a JSONL line is the same object)."""

    input: Any


class BatchAppend(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v2/{ep}/batch/{id}/requests while DRAFT."""

    requests: list[BatchItem]


class BatchAttributes(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """PUT /v2/{ep}/batch/{id} (also the query of a create): None leaves a value as it is."""

    name: _Name | None = None
    sla_hours: Annotated[float, Meta(gt=0, le=24 * 30)] | None = None  # deadline after finalize
    max_price_per_gpu_hour: Annotated[float, Meta(ge=0)] | None = None  # USD; 0 = no cap


class BatchRef(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: BatchState


class BatchCost(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Tide's extension: what the batch's requests ran on, and what that cost."""

    gpu_seconds: dict[str, float]  # by GPU type or "type:mig-profile" (the price key)
    price_per_gpu_hour: dict[str, float]  # USD, the price applied to each key
    usd: float
    requests_run: int  # requests that ran on a worker (a cancelled or malformed one did not)


class BatchSla(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Tide's extension: the deadline and whether the batch will meet it."""

    hours: float
    deadline_at: int  # epoch ms (finalize + hours); 0 while DRAFT
    at_risk: bool = False
    note: str = ""  # why it is at risk, said early (the capacity the operator allows is too small)
    workers: int = 0  # workers the pacing planner lets the batch use now


class BatchSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    endpoint_id: str
    status: BatchState
    request_total: int
    request_in_progress: int
    request_completed: int
    request_failed: int
    created_at: int  # epoch ms
    request_cancelled: int = 0
    name: str = ""
    finalized_at: int = 0  # epoch ms
    finished_at: int = 0  # epoch ms; set once completed + failed + cancelled == total
    sla: BatchSla | None = None
    cost: BatchCost | None = None


class BatchRequestResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    status: RequestState
    output: Any = None
    error: Any = None
    started_at: str = ""  # ISO 8601 UTC, as RunPod
    completed_at: str = ""


class BatchResultsPage(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    requests: list[BatchRequestResult]
    total: int
    offset: int
    limit: int
    has_more: bool
