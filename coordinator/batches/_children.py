"""An open shard's requests as ordinary jobs: reading them, and what a finished one becomes
in the shard's result file (and its cost)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from coordinator._batch_schema import batch_keys, parse_child_job_id
from coordinator._schema import JobRecord, decode_job
from coordinator.jobs import JobsContext
from coordinator.scheduling import slice_share
from coordinator.view import ClusterView

__all__ = ["Children", "child_result", "iso", "price_key_of", "price_of", "read_children", "request_state"]

Children = dict[int, tuple[JobRecord, int]]  # index in the shard -> (job record, mod revision)

_STATES = {"COMPLETED": "COMPLETED", "FAILED": "FAILED", "TIMED_OUT": "FAILED", "CANCELLED": "CANCELLED"}


async def read_children(ctx: JobsContext, ep: str, batch: str, shard: int) -> Children:
    res = await ctx.store.range(batch_keys.children(ep, batch, shard))
    out: Children = {}
    for kv in res.kvs:
        record = decode_job(kv.value)
        parsed = parse_child_job_id(record.id)
        if parsed is not None:
            out[parsed[2]] = (record, kv.mod_revision)
    return out


def request_state(record: JobRecord) -> str:
    return _STATES.get(record.status, record.status)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else ""


async def child_result(ctx: JobsContext, request_id: str, record: JobRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"id": request_id, "status": request_state(record)}
    if record.has_output:
        out["output"] = await ctx.output_of(record)
    if record.error:
        out["error"] = record.error
    if record.started_at:
        out["startedAt"] = iso(record.started_at)
    if record.finished_at and record.status != "IN_PROGRESS":
        out["completedAt"] = iso(record.finished_at)
    return out


def price_key_of(view: ClusterView, worker: str) -> tuple[str, int]:
    """What a worker's GPU time is priced by, and how many GPUs it holds."""
    assignment = view.assignments.get(worker)
    if assignment is None:
        return "unknown", 1
    key = assignment.price_key or assignment.gpu_type or "unknown"
    return key, max(1, len(assignment.devices))


def price_of(prices: dict[str, float], price_key: str) -> float:
    """USD per GPU-hour: the table's, or a MIG slice's share of its card's (as /admin usage)."""
    if price_key in prices:
        return prices[price_key]
    card, _, profile = price_key.partition(":")
    base = prices.get(card, 0.0)
    return base * slice_share(card, profile) if profile else base
