"""Per-endpoint API limits of the public routes (runpod_protocol.md §2.6): the
table, and the pure admission logic over one endpoint's route class.

Each (endpoint, route class) has a token bucket and an in-flight counter:

* **rate**: a bucket of ``rate`` tokens that refills at ``rate`` per 10 s, so a
  client may burst up to ``rate`` requests at once and sustain ``rate`` per
  10 s; a refused request takes no token.
* **concurrent**: at most ``concurrent`` requests of the class in flight at
  once; a /runsync or /status-sync that is waiting is in flight.

The effective limit is ``max(base, running_workers * per_worker)`` (RunPod's
"dynamic rate limiting").  RunPod documents the formula but not its
``requests_per_worker``; Tide's per-worker figure is a tenth of the base, so
the base covers an endpoint of up to 10 workers and each worker beyond that
adds a tenth.  purge-queue does not scale: it is not proportional to workers.

Time is an argument (``now``, seconds on any monotonic clock); nothing here
reads a clock, so property tests drive it.  Every call is O(1).

The table below is the default of the coordinator config's ``[limits]``
section (coordinator/config.py), which :class:`ApiLimits` carries to the
throttle; ``enabled = false`` there turns the limits off.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import msgspec

from tide.api.errors import ResourceExhausted

__all__ = [
    "CONCURRENCY_RETRY_AFTER_S",
    "LIMITS",
    "WINDOW_S",
    "ApiLimits",
    "Bucket",
    "RateLimited",
    "Refusal",
    "Route",
    "RouteLimit",
    "admit",
    "new_bucket",
    "release",
]

Route = Literal["runsync", "run", "status", "stream", "cancel", "purge-queue"]

WINDOW_S: Final = 10.0
# When a concurrency limit refuses, the wait is unknowable (it ends when some
# request in flight ends); 1 s is the shortest Retry-After that HTTP can say.
CONCURRENCY_RETRY_AFTER_S: Final = 1
# Refill arithmetic in floats: a client at exactly the rate may find 0.9999999 tokens.
_EPSILON: Final = 1e-9


class RouteLimit(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one route class; 0 per-worker = does not scale with workers."""

    rate: int  # requests per WINDOW_S
    concurrent: int | None  # requests in flight; None = unlimited
    per_worker_rate: int = 0
    per_worker_concurrent: int = 0

    def effective_rate(self, workers: int) -> int:
        return max(self.rate, workers * self.per_worker_rate)

    def effective_concurrent(self, workers: int) -> int | None:
        if self.concurrent is None:
            return None
        return max(self.concurrent, workers * self.per_worker_concurrent)


def _limit(rate: int, concurrent: int | None) -> RouteLimit:
    return RouteLimit(
        rate=rate,
        concurrent=concurrent,
        per_worker_rate=rate // 10,
        per_worker_concurrent=concurrent // 10 if concurrent else 0,
    )


# RunPod's table (send-requests.mdx "Rate limits"); /status-sync shares /status's.
LIMITS: Final[dict[Route, RouteLimit]] = {
    "runsync": _limit(2000, 400),
    "run": _limit(1000, 200),
    "status": _limit(2000, 400),
    "stream": _limit(2000, 400),
    "cancel": _limit(100, 20),
    "purge-queue": RouteLimit(rate=2, concurrent=None),
}


class ApiLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits a coordinator enforces: every route class's, or none (``enabled`` false)."""

    enabled: bool = True
    routes: dict[Route, RouteLimit] = msgspec.field(default_factory=lambda: dict(LIMITS))


class Bucket:
    """The mutable state of one (endpoint, route class).  Not thread-safe: one
    event loop owns it (admission never awaits, so it needs no lock)."""

    __slots__ = ("inflight", "stamp", "tokens")

    def __init__(self, *, tokens: float, now: float) -> None:
        self.tokens = tokens  # may exceed the capacity only until the next admit
        self.stamp = now
        self.inflight = 0


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a request was refused, and the whole seconds to wait before retrying."""

    kind: Literal["rate", "concurrent"]
    allowed: int  # the effective limit that refused it
    retry_after_s: int  # >= 1


class RateLimited(ResourceExhausted):
    """429: a per-endpoint API limit refused the request; ``retry_after_s`` goes
    out as the ``Retry-After`` header (the runpod SDK's urllib3 retry honours it)."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def admit(bucket: Bucket, limit: RouteLimit, *, now: float, workers: int) -> Refusal | None:
    """Admit one request (take a token and an in-flight slot) or say why not.

    An admitted request must be ``release``d when it ends.  A refused one
    changes nothing but the refill.  ``now`` going backwards refills nothing."""
    capacity = limit.effective_rate(workers)
    per_s = capacity / WINDOW_S
    tokens = min(float(capacity), bucket.tokens + max(0.0, now - bucket.stamp) * per_s)
    bucket.tokens, bucket.stamp = tokens, max(now, bucket.stamp)
    concurrent = limit.effective_concurrent(workers)
    if concurrent is not None and bucket.inflight >= concurrent:
        return Refusal(kind="concurrent", allowed=concurrent, retry_after_s=CONCURRENCY_RETRY_AFTER_S)
    if tokens < 1.0 - _EPSILON:
        wait = (1.0 - tokens) / per_s
        return Refusal(kind="rate", allowed=capacity, retry_after_s=max(1, math.ceil(wait - _EPSILON)))
    bucket.tokens = max(0.0, tokens - 1.0)
    bucket.inflight += 1
    return None


def release(bucket: Bucket) -> None:
    """The end of an admitted request: its in-flight slot frees (its token does not)."""
    bucket.inflight -= 1


def new_bucket(limit: RouteLimit, *, now: float, workers: int) -> Bucket:
    """A bucket for a class nobody has used yet: full."""
    return Bucket(tokens=float(limit.effective_rate(workers)), now=now)
