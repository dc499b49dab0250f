"""The autoscaler: hypothesis properties over tick sequences, plus worked examples."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduling import (
    QueueStats,
    ScaleDecision,
    ScalerState,
    WorkerView,
    compute_desired_workers,
)
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import WorkerState

STATES: list[WorkerState] = [
    "pending",
    "initializing",
    "idle",
    "running",
    "unhealthy",
    "stopping",
    "exited",
    "suspended",
]


def _spec(**kw: Any) -> EndpointSpec:
    return EndpointSpec(name="ep", image="img", **kw)


def _tick(spec: EndpointSpec, stats: QueueStats, workers: list[WorkerView], now: float) -> ScaleDecision:
    return compute_desired_workers(spec, stats, workers, ScalerState(), now)


@st.composite
def specs(draw: st.DrawFn, *, min_zero: bool = False) -> EndpointSpec:
    workers_max = draw(st.integers(0, 12))
    workers_min = 0 if min_zero else draw(st.integers(0, workers_max))
    return _spec(
        workers_min=workers_min,
        workers_max=workers_max,
        idle_timeout=draw(st.integers(1, 30)),
        scaler_type=draw(st.sampled_from(["QUEUE_DELAY", "REQUEST_COUNT"])),
        scaler_value=draw(st.integers(1, 8)),
        concurrency_per_worker=draw(st.integers(1, 4)),
    )


queue_stats = st.builds(
    QueueStats,
    in_queue=st.integers(0, 40),
    in_queue_low_priority=st.integers(0, 10),
    in_progress=st.integers(0, 40),
    oldest_queued_age_s=st.floats(0, 120),
)


@st.composite
def worker_lists(draw: st.DrawFn, now: float) -> list[WorkerView]:
    n = draw(st.integers(0, 10))
    workers = []
    for i in range(n):
        state = draw(st.sampled_from(STATES))
        workers.append(
            WorkerView(
                worker_id=f"w{i}",
                state=state,
                busy=draw(st.integers(0, 3)),
                idle_since=draw(st.none() | st.floats(now - 100, now)),
                restarts=draw(st.integers(0, 5)),
            )
        )
    return workers


@st.composite
def tick_sequences(draw: st.DrawFn) -> tuple[EndpointSpec, list[tuple[float, QueueStats, list[WorkerView]]]]:
    spec = draw(specs())
    now = 1000.0
    ticks = []
    for _ in range(draw(st.integers(1, 25))):
        now += draw(st.floats(0.1, 10))
        ticks.append((now, draw(queue_stats), draw(worker_lists(now))))
    return spec, ticks


@settings(max_examples=150, deadline=None)
@given(tick_sequences())
def test_autoscaler_stays_within_bounds_and_never_stops_a_busy_worker(
    case: tuple[EndpointSpec, list[tuple[float, QueueStats, list[WorkerView]]]],
) -> None:
    spec, ticks = case
    state = ScalerState()
    for now, stats, workers in ticks:
        decision = compute_desired_workers(spec, stats, workers, state, now)
        state = decision.state
        assert spec.workers_min <= decision.desired <= spec.workers_max
        assert decision.start >= 0
        by_id = {w.worker_id: w for w in workers}
        assert len(set(decision.stop)) == len(decision.stop)
        for worker_id in decision.stop:
            stopped = by_id[worker_id]
            assert stopped.busy == 0
            assert stopped.state not in ("running", "stopping", "exited")


def _simulate(
    spec: EndpointSpec, loads: list[tuple[float, QueueStats]], dt: float, until: float
) -> tuple[list[WorkerView], ScaleDecision]:
    """Apply decisions to a toy cluster: started workers are idle by the next tick."""
    workers: list[WorkerView] = []
    state = ScalerState()
    serial = 0
    now = loads[0][0]
    schedule = dict(loads)
    decision = None
    while now <= until:
        stats = schedule.get(now, QueueStats())
        busy = stats.in_progress > 0
        workers = [
            WorkerView(
                worker_id=w.worker_id,
                state="running" if busy else "idle",
                busy=1 if busy else 0,
                idle_since=None if busy else (w.idle_since if w.idle_since is not None else now),
            )
            for w in workers
        ]
        decision = compute_desired_workers(spec, stats, workers, state, now)
        state = decision.state
        workers = [w for w in workers if w.worker_id not in decision.stop]
        for _ in range(decision.start):
            serial += 1
            workers.append(WorkerView(worker_id=f"n{serial}", state="pending"))
        now = round(now + dt, 6)
    assert decision is not None
    return workers, decision


@settings(max_examples=100, deadline=None)
@given(
    spec=specs(min_zero=True),
    busy_ticks=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=15),
    dt=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
)
def test_autoscaler_reaches_zero_after_idle_timeout_without_load(
    spec: EndpointSpec, busy_ticks: list[tuple[int, int]], dt: float
) -> None:
    loads = [
        (round(100.0 + i * dt, 6), QueueStats(in_queue=q, in_progress=p, oldest_queued_age_s=dt * i))
        for i, (q, p) in enumerate(busy_ticks)
    ]
    last = loads[-1][0]
    workers, decision = _simulate(spec, loads, dt, until=last + spec.idle_timeout + 3 * dt)
    assert decision.desired == 0
    assert workers == []


def test_request_count_is_ceil_of_queue_plus_in_progress_over_scaler_value() -> None:
    spec = _spec(scaler_type="REQUEST_COUNT", scaler_value=4, workers_max=10)
    decision = _tick(spec, QueueStats(in_queue=5, in_progress=4), [], 10.0)
    assert decision.desired == 3
    assert decision.start == 3
    assert decision.reason == "request-count"


def test_any_queued_job_scales_from_zero() -> None:
    spec = _spec(scaler_type="REQUEST_COUNT", scaler_value=100)
    decision = _tick(spec, QueueStats(in_queue=1), [], 10.0)
    assert (decision.desired, decision.start) == (1, 1)
    spec = _spec(concurrency_per_worker=1000, idle_timeout=3600)
    state = ScalerState()
    for t in range(60):  # a minute of nothing dilutes both windows
        state = compute_desired_workers(spec, QueueStats(), [], state, float(t)).state
    decision = compute_desired_workers(spec, QueueStats(in_queue=1), [], state, 60.0)
    assert (decision.desired, decision.start) == (1, 1)


def test_low_priority_alone_never_scales_from_zero_but_holds_existing_workers() -> None:
    spec = _spec(idle_timeout=5)
    assert _tick(spec, QueueStats(in_queue_low_priority=10), [], 100.0).desired == 0
    idle = [WorkerView(worker_id=f"w{i}", state="idle", idle_since=0.0) for i in range(2)]
    decision = _tick(spec, QueueStats(in_queue_low_priority=10), idle, 100.0)
    assert decision.desired == 2
    assert decision.stop == []
    assert decision.start == 0


def test_idle_workers_stop_longest_idle_first_once_timed_out() -> None:
    spec = _spec(idle_timeout=5, workers_min=1)
    workers = [
        WorkerView(worker_id="recent", state="idle", idle_since=98.0),
        WorkerView(worker_id="oldest", state="idle", idle_since=10.0),
        WorkerView(worker_id="older", state="idle", idle_since=50.0),
        WorkerView(worker_id="busy", state="running", busy=1),
    ]
    decision = _tick(spec, QueueStats(in_progress=1), workers, 100.0)
    assert decision.desired == 2
    assert decision.stop == ["oldest", "older"]


def test_idle_worker_without_idle_since_is_timed_from_first_idle_tick() -> None:
    spec = _spec(idle_timeout=5)
    worker = [WorkerView(worker_id="w", state="idle")]
    first = compute_desired_workers(spec, QueueStats(), worker, ScalerState(), 100.0)
    assert first.stop == []
    assert first.state.idle_seen == {"w": 100.0}
    later = compute_desired_workers(spec, QueueStats(), worker, first.state, 105.0)
    assert later.stop == ["w"]
    assert later.desired == 0


def test_unhealthy_and_crash_looping_workers_are_replaced_but_busy_ones_kept() -> None:
    spec = _spec(scaler_type="REQUEST_COUNT", scaler_value=1, workers_max=5)
    workers = [
        WorkerView(worker_id="ok", state="running", busy=1),
        WorkerView(worker_id="sick", state="unhealthy"),
        WorkerView(worker_id="looping", state="initializing", restarts=4),
        WorkerView(worker_id="sick-busy", state="unhealthy", busy=1),
    ]
    decision = _tick(spec, QueueStats(in_progress=2, in_queue=1), workers, 100.0)
    assert decision.desired == 3
    assert decision.stop == ["sick", "looping"]
    assert decision.start == 2


def test_queue_delay_adds_workers_for_waiting_jobs_and_counts_starting_ones() -> None:
    spec = _spec(scaler_value=4, workers_max=10, concurrency_per_worker=1)
    running = [WorkerView(worker_id="r", state="running", busy=1)]
    stats = QueueStats(in_queue=2, in_progress=1, oldest_queued_age_s=9.0)
    decision = _tick(spec, stats, running, 100.0)
    assert decision.panic
    assert decision.desired >= 3
    starting = [*running, *(WorkerView(worker_id=f"s{i}", state="pending") for i in range(decision.start))]
    again = compute_desired_workers(spec, stats, starting, decision.state, 102.0)
    # The starting workers already cover the waiting jobs: a slow cold start adds nobody.
    assert again.start == 0
    assert again.desired == decision.desired


def test_queue_delay_extra_covers_jobs_beyond_free_slots() -> None:
    spec = _spec(scaler_value=4, workers_max=100, concurrency_per_worker=2, idle_timeout=60)
    workers = [WorkerView(worker_id=f"r{i}", state="running", busy=2) for i in range(2)]
    state = ScalerState()
    for t in range(95, 100):  # quiet seconds keep both window averages low
        state = compute_desired_workers(spec, QueueStats(), workers, state, float(t)).state
    stats = QueueStats(in_queue=6, in_progress=4, oldest_queued_age_s=30.0)
    decision = compute_desired_workers(spec, stats, workers, state, 100.0)
    assert decision.reason == "queue-delay"
    assert decision.desired == 2 + 3  # current capacity + ceil(6 waiting / 2 per worker)


def test_panic_never_scales_down() -> None:
    spec = _spec(workers_max=20, idle_timeout=1)
    workers = [WorkerView(worker_id=f"w{i}", state="idle", idle_since=0.0) for i in range(6)]
    burst = _tick(spec, QueueStats(in_queue=30, oldest_queued_age_s=1.0), workers, 100.0)
    assert burst.panic
    calm = compute_desired_workers(spec, QueueStats(in_progress=1), workers, burst.state, 103.0)
    assert calm.panic
    assert calm.desired >= 6
    assert calm.stop == []


def test_stable_window_follows_average_load_outside_panic() -> None:
    spec = _spec(workers_max=50, concurrency_per_worker=10)
    workers = [WorkerView(worker_id=f"w{i}", state="running", busy=7) for i in range(3)]
    state = ScalerState()
    for t in range(0, 20, 2):
        decision = compute_desired_workers(spec, QueueStats(in_progress=21), workers, state, 100.0 + t)
        state = decision.state
    assert not decision.panic
    assert decision.reason == "stable"
    assert decision.desired == 3


def test_workers_over_a_lowered_max_stop_without_waiting_for_idle_timeout() -> None:
    spec = _spec(workers_max=2, idle_timeout=600)
    workers = [
        WorkerView(worker_id="busy", state="running", busy=1),
        WorkerView(worker_id="idle", state="idle", idle_since=99.0),
        WorkerView(worker_id="new", state="pending"),
        WorkerView(worker_id="warming", state="initializing"),
    ]
    decision = _tick(spec, QueueStats(in_progress=1), workers, 100.0)
    assert decision.desired <= 2
    assert decision.stop == ["idle", "new"]


def test_workers_min_above_max_is_capped_by_max() -> None:
    decision = _tick(_spec(workers_min=5, workers_max=2), QueueStats(), [], 100.0)
    assert decision.desired == 2
    assert decision.reason.endswith("clamped to [5, 2]")


def test_no_scale_up_without_load() -> None:
    spec = _spec(workers_max=20, idle_timeout=30)
    one = [WorkerView(worker_id="w", state="idle", idle_since=100.0)]
    state = ScalerState()
    for t in range(0, 10, 2):
        state = compute_desired_workers(spec, QueueStats(in_progress=10), one, state, 100.0 + t).state
    decision = compute_desired_workers(spec, QueueStats(), one, state, 112.0)
    assert decision.desired == 1
    assert decision.start == 0
