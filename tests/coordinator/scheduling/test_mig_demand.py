"""The MIG demand history (coordinator/scheduling/_mig_demand.py): properties of the pure update and
forecast, and cases of what counts as demand."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator._node_schema import MigDemandRecord, NodeRecord, WorkerAssignment, nkeys
from coordinator.scheduling._mig_demand import (
    ALPHA_DAY,
    bucket_label,
    buckets_of,
    compute_demand,
    estimate,
    forecast_for,
    update_demand,
)
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory

SETTINGS = settings(max_examples=200, deadline=None)
KEYS = ["H100-80GB:1g.10gb", "H100-80GB:3g.40gb", "H100-80GB", "RTXPRO6000-96GB:1g.24gb", "A100-80GB"]
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC

samples = st.dictionaries(st.sampled_from(KEYS), st.floats(0, 20, allow_nan=False), max_size=len(KEYS))
# (minutes after T0, sample): a leader's samples, possibly out of order or twice a minute.
steps = st.lists(st.tuples(st.integers(0, 60 * 24 * 3), samples), max_size=40)


def _run(steps: list[tuple[int, dict[str, float]]], max_cells: int = 32) -> MigDemandRecord | None:
    rec = None
    for minute, sample in steps:
        rec = update_demand(
            rec,
            region="EU",
            bucket="d08",
            sample=sample,
            now=T0 + 60 * minute + 7,
            alpha=ALPHA_DAY,
            max_cells=max_cells,
        )
    return rec


@SETTINGS
@given(steps, st.integers(1, 5))
def test_averages_stay_within_the_samples_and_the_record_stays_small(
    steps: list[tuple[int, dict[str, float]]], max_cells: int
) -> None:
    rec = _run(steps, max_cells)
    if rec is None:
        return
    assert len(rec.cells) <= max_cells
    assert rec.samples <= len(steps)
    top = {k: max((s.get(k, 0.0) for _, s in steps), default=0.0) for k in KEYS}
    for hour in (rec.occurrence, rec.occurrence + 1):
        demand, _ = estimate(rec, hour, ALPHA_DAY)
        for key, value in demand.items():
            assert 0.0 < value <= top[key] + 1e-9


@SETTINGS
@given(steps, st.integers(0, 60 * 24 * 3), samples, samples)
def test_one_sample_per_minute_counts_whoever_writes_it(
    steps: list[tuple[int, dict[str, float]]], minute: int, first: dict[str, float], second: dict[str, float]
) -> None:
    """A retried write, or a new leader sampling the same minute, changes nothing."""
    rec = _run([*steps, (minute, first)])
    again = update_demand(rec, region="EU", bucket="d08", sample=second, now=T0 + 60 * minute + 50, alpha=0.3)
    assert again == rec
    earlier = update_demand(
        rec, region="EU", bucket="d08", sample=second, now=T0 + 60 * minute - 60, alpha=0.3
    )
    assert earlier == rec


@SETTINGS
@given(st.floats(0.01, 50, allow_nan=False), st.integers(1, 6), st.integers(1, 5))
def test_a_steady_demand_is_forecast_as_itself(value: float, days: int, per_hour: int) -> None:
    rec = None
    for day in range(days):
        for m in range(per_hour):
            now = T0 + day * 86400 + m * 600
            rec = update_demand(rec, region="EU", bucket="d08", sample={KEYS[0]: value}, now=now, alpha=0.3)
    demand, seen = estimate(rec, int(T0 // 3600) + 24 * days, 0.3)
    assert seen == days and math.isclose(demand[KEYS[0]], value, rel_tol=1e-9)


def test_an_occurrence_counts_once_it_is_over_and_old_demand_fades() -> None:
    hour = int(T0 // 3600)
    rec = update_demand(None, region="EU", bucket="d08", sample={KEYS[0]: 4}, now=T0, alpha=0.5)
    assert estimate(rec, hour, 0.5) == ({}, 0)  # still being sampled: partial
    assert estimate(rec, hour + 24, 0.5) == ({KEYS[0]: 4.0}, 1)
    rec = update_demand(rec, region="EU", bucket="d08", sample={}, now=T0 + 86400, alpha=0.5)
    rec = update_demand(rec, region="EU", bucket="d08", sample={KEYS[1]: 2}, now=T0 + 86460, alpha=0.5)
    assert estimate(rec, hour + 48, 0.5) == ({KEYS[0]: 2.0, KEYS[1]: 0.5}, 2)  # 2 over 2 samples, halved


def test_forecasts_use_the_week_once_it_has_two_occurrences_else_the_day() -> None:
    hour = int(T0 // 3600)
    week, day = buckets_of(hour)
    assert (week, day) == ("w104", "d08") and bucket_label(hour) == "Fri 08:00 UTC"
    d = w = None
    for n in range(3):
        now = T0 + n * 86400
        d = update_demand(d, region="EU", bucket=day, sample={KEYS[0]: 3}, now=now, alpha=0.3)
    assert forecast_for(hour + 72, w, d).basis == "hour-of-day"
    assert forecast_for(hour + 72, None, None).basis == "none"
    for n in range(2):
        w = update_demand(w, region="EU", bucket=week, sample={KEYS[1]: 1}, now=T0 + n * 7 * 86400, alpha=0.4)
    f = forecast_for(hour + 14 * 24, w, d)
    assert (f.basis, f.occurrences, f.demand) == ("hour-of-week", 2, {KEYS[1]: 1.0})
    assert nkeys.mig_demand("EU", week) == b"/tide/migdemand/EU/w104"
    assert nkeys.mig_demand("", "d08") == b"/tide/migdemand/~/d08"


def _node(node: str, region: str, dc: str, *, mig: bool = True) -> NodeRecord:
    gpu = GpuInfo(index=0, uuid=f"GPU-{node}", type_id="H100-80GB", mig_capable=True, mig_enabled=mig)
    return NodeRecord(
        id=node, inventory=NodeInventory(hostname=node, region=region, datacenter=dc, gpus=[gpu])
    )


def test_demand_is_what_workers_hold_plus_what_waiting_workers_ask_for() -> None:
    nodes = [_node("eu-1", "EU", "EU-RO-1"), _node("us-1", "US", "US-TX-1"), _node("eu-2", "EU", "EU-RO-1")]
    lost = NodeRecord(id="x", inventory=NodeInventory(hostname="x", region="AP"), lost=True)
    held = [
        WorkerAssignment(
            worker_id="a", endpoint_id="e", node_id="eu-1", gpu_type="H100-80GB", mig_profile="3g.40gb"
        ),
        WorkerAssignment(
            worker_id="b",
            endpoint_id="e",
            node_id="us-1",
            gpu_type="NVIDIA H100 80GB HBM3",
            devices=["GPU-1", "GPU-2"],
        ),
        WorkerAssignment(worker_id="c", endpoint_id="e", node_id="gone", gpu_type="H100-80GB"),
    ]
    spec = EndpointSpec(name="s", image="x")
    waiting = [
        (EndpointSpec(name="eu", image="x", gpu_type_ids=["mig-10gb"], data_center_ids=["EU-RO-1"]), 2),
        (EndpointSpec(name="any", image="x", gpu_type_ids=["H100-80GB:1g.20gb"]), 1),
        (EndpointSpec(name="multi", image="x", gpu_type_ids=["mig-10gb", "A100-80GB"], gpu_count=2), 1),
        (spec, 3),  # any GPU: no kind to prepare
    ]
    got = compute_demand([*nodes, lost], held, waiting)
    assert got == {
        "EU": {
            "A100-80GB": 1.0,
            "H100-80GB:1g.10gb": 2.0,
            "H100-80GB:1g.20gb": 0.5,
            "H100-80GB:3g.40gb": 1.0,
        },
        "US": {"A100-80GB": 1.0, "H100-80GB": 2.0, "H100-80GB:1g.20gb": 0.5},
    }
    assert compute_demand(nodes, [], []) == {"EU": {}, "US": {}}  # zero samples are samples
