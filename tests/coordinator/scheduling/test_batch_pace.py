"""plan_batch_pace: batch work uses spare capacity, yields to real-time traffic, and speeds
up past the spare capacity only as far as its SLA needs."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st

from coordinator.scheduling import PaceInput, plan_batch_pace

_inputs = st.builds(
    PaceInput,
    remaining=st.integers(0, 10_000_000),
    time_left_s=st.one_of(st.just(math.inf), st.floats(-3600, 30 * 86400, allow_nan=False)),
    per_request_s=st.floats(0.0, 600.0, allow_nan=False),
    workers_max=st.integers(0, 1000),
    allowance=st.integers(0, 1000),
    realtime_busy=st.integers(0, 2000),
    realtime_queued=st.integers(0, 100_000),
)


@given(_inputs)
def test_never_more_than_allowed_nor_than_the_work_left(p: PaceInput) -> None:
    pace = plan_batch_pace(p)
    assert 0 <= pace.workers <= max(1, p.workers_max + p.allowance)
    assert pace.workers <= p.remaining
    assert (pace.workers >= 1) == (p.remaining > 0)  # a batch with work left always moves


@given(_inputs)
def test_without_a_deadline_it_uses_only_spare_capacity(p: PaceInput) -> None:
    p = PaceInput(**{**_fields(p), "time_left_s": math.inf})
    spare = max(0, max(1, p.workers_max + p.allowance) - p.realtime_busy - p.realtime_queued)
    pace = plan_batch_pace(p)
    assert pace.workers == min(max(spare, 1), p.remaining, max(1, p.workers_max + p.allowance))
    assert not pace.at_risk


@given(_inputs, st.integers(1, 1000))
def test_realtime_demand_never_gives_a_batch_more_workers(p: PaceInput, more: int) -> None:
    busier = PaceInput(**{**_fields(p), "realtime_queued": p.realtime_queued + more})
    assert plan_batch_pace(busier).workers <= plan_batch_pace(p).workers


@given(_inputs, st.floats(0.1, 1.0))
def test_less_time_left_never_means_fewer_workers(p: PaceInput, factor: float) -> None:
    if math.isinf(p.time_left_s) or p.time_left_s <= 0:
        return
    sooner = PaceInput(**{**_fields(p), "time_left_s": p.time_left_s * factor})
    assert plan_batch_pace(sooner).workers >= plan_batch_pace(p).workers


@given(_inputs)
@example(
    PaceInput(
        remaining=1,
        time_left_s=1.0,
        per_request_s=600.0,
        workers_max=1000,
        allowance=0,
        realtime_busy=0,
        realtime_queued=0,
    )
)
def test_at_risk_exactly_when_the_cap_cannot_meet_the_deadline(p: PaceInput) -> None:
    pace = plan_batch_pace(p)
    cap = max(1, p.workers_max + p.allowance)
    hopeless = p.time_left_s <= 0 or p.per_request_s > p.time_left_s or pace.needed > cap
    assert bool(pace.at_risk) == (p.remaining > 0 and hopeless)
    if p.remaining > 0 and pace.needed <= cap:
        assert pace.workers >= pace.needed  # on track: the planner gives what the deadline needs


def test_a_busy_endpoint_still_gives_the_batch_what_its_sla_needs() -> None:
    p = PaceInput(
        remaining=36_000,
        time_left_s=3600,
        per_request_s=1.0,
        workers_max=20,
        allowance=0,
        realtime_busy=20,
        realtime_queued=50,
    )
    pace = plan_batch_pace(p)
    assert (pace.workers, pace.needed, pace.at_risk) == (10, 10, "")
    late = plan_batch_pace(PaceInput(**{**_fields(p), "time_left_s": 600}))
    assert late.workers == 20 and "needs 60 workers" in late.at_risk


def _fields(p: PaceInput) -> dict[str, object]:
    return {f: getattr(p, f) for f in p.__struct_fields__}
