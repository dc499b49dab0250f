"""Applies the per-endpoint API limits (``_limits``) to the public routes.

Limits are per coordinator replica: each replica admits up to the table's
limits on its own, so N replicas behind a load balancer admit up to N times
the table in all.  An exact cluster-wide limiter would cost a store round trip
per request, more than the whole job path spends on a /run.

Only client traffic is limited.  The worker API (job-take, job-done, ...) never
is: a 429 there makes the runpod SDK sleep 5 s.  Operator keys (the bootstrap
admin key and keys of scope ``admin``) are exempt too: they are the operator's
own tools (the CLI, benchmarks, batch loaders), which RunPod has no notion of.
Authentication comes first, so a request with a bad key or for an unknown
endpoint is refused without spending anyone's budget, and only real endpoints
get buckets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from coordinator.api._authz import CLIENT_KEY
from coordinator.api._limits import (
    LIMITS,
    WINDOW_S,
    Bucket,
    RateLimited,
    Refusal,
    Route,
    RouteLimit,
    admit,
    new_bucket,
    release,
)
from coordinator.view import ClusterView

__all__ = ["APP_KEY_THROTTLE", "Handler", "Throttle", "guard"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Running workers are counted from the view at most this often per endpoint:
# the count is O(workers), admission must stay O(1).
_WORKERS_TTL_S: Final = 1.0
_PATHS: Final[dict[Route, str]] = {"status": "status and status-sync"}


class Throttle:
    """Per-replica admission for the public routes.  ``admit`` never awaits, so
    concurrent requests on the event loop need no lock."""

    def __init__(
        self,
        view: ClusterView,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: dict[Route, RouteLimit] = LIMITS,
        enabled: bool = True,
        on_refused: Callable[[str, Route, str], None] = lambda ep, route, kind: None,
    ) -> None:
        self._view = view
        self.clock = clock  # public: tests freeze it
        self.limits = limits
        self.enabled = enabled  # false ([limits] enabled = false): every request is admitted
        self._on_refused = on_refused  # (endpoint, route, "rate" | "concurrent"): a metric
        self._buckets: dict[tuple[str, Route], Bucket] = {}
        self._workers: dict[str, tuple[float, int]] = {}  # ep -> (counted at, running workers)

    def admit(self, ep: str, route: Route) -> Bucket:
        """Admit one request, or raise ``RateLimited``; ``release`` the bucket when it ends."""
        now = self.clock()
        limit = self.limits[route]
        scales = limit.per_worker_rate or limit.per_worker_concurrent
        workers = self.running_workers(ep, now) if scales else 0
        bucket = self._buckets.get((ep, route))
        if bucket is None:
            bucket = self._new_bucket(ep, route, limit, now, workers)
        refusal = admit(bucket, limit, now=now, workers=workers)
        if refusal is not None:
            self._on_refused(ep, route, refusal.kind)
            message = _message(ep, route, limit, refusal, workers)
            raise RateLimited(message, retry_after_s=refusal.retry_after_s)
        return bucket

    def in_flight(self, ep: str, route: Route) -> int:
        bucket = self._buckets.get((ep, route))
        return bucket.inflight if bucket is not None else 0

    def running_workers(self, ep: str, now: float) -> int:
        """Healthy workers of ``ep`` that are up (busy or idle; /health's ``ready``)."""
        cached = self._workers.get(ep)
        if cached is not None and now - cached[0] < _WORKERS_TTL_S:
            return cached[1]
        present = self._view.presence.get(ep, {})
        count = sum(1 for p in present.values() if not p.unhealthy)
        self._workers[ep] = (now, count)
        return count

    def _new_bucket(self, ep: str, route: Route, limit: RouteLimit, now: float, workers: int) -> Bucket:
        if len(self._buckets) >= 8 * (len(self._view.endpoints) + 16):
            # Deleted endpoints leave their buckets behind; drop them now and then.
            live = self._view.endpoints
            self._buckets = {k: b for k, b in self._buckets.items() if k[0] in live or b.inflight}
            self._workers = {e: w for e, w in self._workers.items() if e in live}
        bucket = self._buckets[ep, route] = new_bucket(limit, now=now, workers=workers)
        return bucket


APP_KEY_THROTTLE = web.AppKey("throttle", Throttle)


def _message(ep: str, route: Route, limit: RouteLimit, refusal: Refusal, workers: int) -> str:
    path = f"/v2/{ep}/{_PATHS.get(route, route)}"
    if refusal.kind == "rate":
        what = f"rate limit exceeded: {path} allows {refusal.allowed} requests per {WINDOW_S:g} s"
        base, per_worker = limit.rate, limit.per_worker_rate
    else:
        what = f"concurrency limit exceeded: {path} allows {refusal.allowed} requests in flight at once"
        base, per_worker = limit.concurrent or 0, limit.per_worker_concurrent
    if per_worker:
        what += f" (the larger of {base} and {per_worker} per running worker; {workers} running)"
    return f"{what} on this coordinator; retry after {refusal.retry_after_s} s"


def guard(throttle: Throttle, route: Route | None, handler: Handler) -> Handler:
    """``handler`` behind, for a limited ``route``, admission (the client's key was checked
    by the authorization middleware, which runs first: coordinator/api/_authz.py)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        ep = request.match_info["ep"]
        key = request[CLIENT_KEY]
        if route is None or key is None or key.scope == "admin" or not throttle.enabled:
            return await handler(request)
        bucket = throttle.admit(ep, route)
        try:
            return await handler(request)
        finally:
            release(bucket)

    return guarded
