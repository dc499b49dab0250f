"""Batch limits and pacing knobs ([batch] in the coordinator's config)."""

from __future__ import annotations

import msgspec

__all__ = ["BatchSettings"]


class BatchSettings(msgspec.Struct, frozen=True, kw_only=True):
    shard_size: int = 1000  # requests per shard (one object in the store, one lease while open)
    max_requests: int = 10_000_000  # per batch
    max_active: int = 100  # batches per endpoint not yet finished
    append_limit: int = 10 * 1024 * 1024  # a JSON create/append body (RunPod: 10 MiB)
    upload_limit: int = 16 * 1024 * 1024 * 1024  # a JSONL upload
    request_limit: int = 1024 * 1024  # one request's JSON
    allowance_workers: int = 0  # workers batches may use beyond an endpoint's workersMax
    prefetch: int = 2  # queued batch requests per worker the batch may use
    tick_s: float = 1.0  # the dispatcher's pass (also woken by batch children finishing)
    assumed_request_s: float = 1.0  # per-request time before any has been measured
    prices: dict[str, float] = {}  # USD per GPU-hour by price key (the coordinator's [prices])
