"""The per-endpoint API limits: the token bucket and in-flight counter as
properties over request sequences (time is an argument, no clock is read),
the table against RunPod's, and the Throttle that applies them per endpoint."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.api._limits import (
    LIMITS,
    WINDOW_S,
    Bucket,
    RateLimited,
    RouteLimit,
    admit,
    new_bucket,
    release,
)
from coordinator.api._throttle import Throttle
from coordinator.view import ClusterView
from tide.api.errors import ResourceExhausted

limits = st.builds(
    RouteLimit,
    rate=st.integers(1, 3000),
    concurrent=st.one_of(st.none(), st.integers(1, 500)),
    per_worker_rate=st.integers(0, 300),
    per_worker_concurrent=st.integers(0, 50),
)
# A request: (seconds since the previous one, how many earlier admitted ones end first).
steps = st.lists(st.tuples(st.floats(0, 3), st.integers(0, 3)), max_size=300)


def _drive(limit: RouteLimit, workers: int, script: list[tuple[float, int]]) -> list[tuple[float, bool]]:
    """Plays a script; returns (time, admitted) per request."""
    now = 0.0
    bucket = new_bucket(limit, now=now, workers=workers)
    out = []
    for gap, ends in script:
        now += gap
        for _ in range(min(ends, bucket.inflight)):
            release(bucket)
        out.append((now, admit(bucket, limit, now=now, workers=workers) is None))
    return out


def test_the_table_is_runpods() -> None:
    table = {route: (lim.rate, lim.concurrent) for route, lim in LIMITS.items()}
    assert table == {
        "runsync": (2000, 400),
        "run": (1000, 200),
        "status": (2000, 400),
        "stream": (2000, 400),
        "cancel": (100, 20),
        "purge-queue": (2, None),
    }
    assert WINDOW_S == 10.0


@pytest.mark.parametrize("route", ["runsync", "run", "status", "stream", "cancel"])
def test_the_limit_is_the_larger_of_the_base_and_the_running_workers_share(route: str) -> None:
    lim = LIMITS[route]  # type: ignore[index]
    assert lim.effective_rate(0) == lim.effective_rate(10) == lim.rate
    assert lim.effective_rate(25) == 25 * lim.rate // 10
    assert lim.effective_concurrent(25) == 25 * (lim.concurrent or 0) // 10
    assert LIMITS["purge-queue"].effective_rate(1000) == 2  # purge-queue does not scale


@given(limit=limits, workers=st.integers(0, 50), script=steps)
def test_no_interval_admits_more_than_a_full_bucket_plus_its_refill(
    limit: RouteLimit, workers: int, script: list[tuple[float, int]]
) -> None:
    cap = limit.effective_rate(workers)
    admitted = [t for t, ok in _drive(limit, workers, script) if ok]
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            span = admitted[j] - start
            assert j - i + 1 <= cap + span * cap / WINDOW_S + 1e-6


@given(limit=limits, workers=st.integers(0, 50), n=st.integers(1, 400))
def test_a_client_within_the_rate_and_concurrency_is_never_refused(
    limit: RouteLimit, workers: int, n: int
) -> None:
    gap = WINDOW_S / limit.effective_rate(workers)
    script = [(gap, 1)] * n  # one request per refill period; each ends before the next
    assert all(ok for _, ok in _drive(limit, workers, script))


@given(limit=limits, workers=st.integers(0, 50), script=steps)
def test_in_flight_never_exceeds_the_concurrency_limit(
    limit: RouteLimit, workers: int, script: list[tuple[float, int]]
) -> None:
    bucket = new_bucket(limit, now=0.0, workers=workers)
    now = 0.0
    for gap, ends in script:
        now += gap
        for _ in range(min(ends, bucket.inflight)):
            release(bucket)
        before = (bucket.inflight, bucket.tokens)
        refusal = admit(bucket, limit, now=now, workers=workers)
        concurrent = limit.effective_concurrent(workers)
        assert concurrent is None or bucket.inflight <= concurrent
        if refusal is not None:  # a refusal takes nothing (the refill aside)
            assert bucket.inflight == before[0] and bucket.tokens >= before[1]
            assert refusal.retry_after_s >= 1


@given(limit=limits, workers=st.integers(0, 50), wait=st.floats(0, 30))
def test_retry_after_is_enough_for_a_rate_refusal(limit: RouteLimit, workers: int, wait: float) -> None:
    limit = RouteLimit(rate=limit.rate, concurrent=None, per_worker_rate=limit.per_worker_rate)
    bucket = new_bucket(limit, now=0.0, workers=workers)
    while admit(bucket, limit, now=0.0, workers=workers) is None:
        pass  # empty the bucket at t=0
    refusal = admit(bucket, limit, now=wait, workers=workers)
    if refusal is not None:
        assert refusal.kind == "rate"
        assert admit(bucket, limit, now=wait + refusal.retry_after_s, workers=workers) is None
        # ... and it is not grossly more than needed: one token's refill, rounded up.
        assert refusal.retry_after_s <= max(1, math.ceil(WINDOW_S / limit.effective_rate(workers)))


def test_a_clock_going_backwards_refills_nothing() -> None:
    lim = RouteLimit(rate=2, concurrent=None)
    bucket = Bucket(tokens=0.0, now=100.0)
    assert admit(bucket, lim, now=50.0, workers=0) is not None
    assert admit(bucket, lim, now=100.0, workers=0) is not None  # the 50 s back did not count
    assert admit(bucket, lim, now=105.0, workers=0) is None


def test_purge_queue_allows_two_per_ten_seconds_then_says_five() -> None:
    lim = LIMITS["purge-queue"]
    bucket = new_bucket(lim, now=0.0, workers=0)
    assert admit(bucket, lim, now=0.0, workers=0) is None
    assert admit(bucket, lim, now=0.0, workers=0) is None
    refusal = admit(bucket, lim, now=0.0, workers=0)
    assert refusal is not None and refusal.kind == "rate" and refusal.retry_after_s == 5
    assert refusal.allowed == 2


def test_more_workers_lift_the_concurrency_limit() -> None:
    lim = LIMITS["cancel"]
    bucket = new_bucket(lim, now=0.0, workers=0)
    for _ in range(20):
        assert admit(bucket, lim, now=0.0, workers=0) is None
    refusal = admit(bucket, lim, now=0.0, workers=0)
    assert refusal is not None and refusal.kind == "concurrent" and refusal.allowed == 20
    assert refusal.retry_after_s == 1
    assert admit(bucket, lim, now=0.0, workers=30) is None  # 30 workers x 2 = 60 in flight
    release(bucket)
    assert bucket.inflight == 20


# -- the Throttle: per endpoint and route, running workers from the view ------


class FakeView:
    def __init__(self) -> None:
        self.endpoints: dict[str, Any] = {"a": None, "b": None}
        self.presence: dict[str, dict[str, Any]] = {}

    def workers(self, ep: str, healthy: int, unhealthy: int = 0) -> None:
        self.presence[ep] = {f"w{i}": SimpleNamespace(unhealthy="") for i in range(healthy)}
        for i in range(unhealthy):
            self.presence[ep][f"u{i}"] = SimpleNamespace(unhealthy="fitness check failed")


def _throttle(view: FakeView, clock: list[float]) -> Throttle:
    return Throttle(cast(ClusterView, view), clock=lambda: clock[0])


def test_throttle_keeps_endpoints_and_routes_apart() -> None:
    view, clock = FakeView(), [0.0]
    t = _throttle(view, clock)
    for _ in range(2):
        t.admit("a", "purge-queue")
    with pytest.raises(RateLimited) as refused:
        t.admit("a", "purge-queue")
    assert isinstance(refused.value, ResourceExhausted) and refused.value.http_status == 429
    assert refused.value.retry_after_s == 5
    msg = refused.value.message
    assert "/v2/a/purge-queue" in msg and "2 requests per 10 s" in msg and "retry after 5 s" in msg
    t.admit("b", "purge-queue")  # another endpoint
    t.admit("a", "cancel")  # another route
    clock[0] = 5.0
    t.admit("a", "purge-queue")  # one token came back


def test_throttle_counts_healthy_workers_and_rereads_them_after_a_second() -> None:
    view, clock = FakeView(), [0.0]
    t = _throttle(view, clock)
    held = [t.admit("a", "cancel") for _ in range(20)]
    with pytest.raises(RateLimited) as refused:
        t.admit("a", "cancel")
    msg = refused.value.message
    assert "concurrency limit" in msg and "20 requests in flight" in msg and "0 running" in msg
    assert "retry after 1 s" in msg
    view.workers("a", healthy=15, unhealthy=40)
    with pytest.raises(RateLimited):
        t.admit("a", "cancel")  # the count is a second old at most: not yet re-read
    clock[0] = 1.0
    t.admit("a", "cancel")  # 15 healthy workers x 2 = 30 in flight
    assert t.running_workers("a", clock[0]) == 15
    for bucket in held:
        release(bucket)


def test_throttle_forgets_deleted_endpoints() -> None:
    view, clock = FakeView(), [0.0]
    t = _throttle(view, clock)
    for i in range(200):
        view.endpoints[f"e{i}"] = None
        release(t.admit(f"e{i}", "run"))
        del view.endpoints[f"e{i}"]
    assert len(t._buckets) <= 8 * (len(view.endpoints) + 16)
