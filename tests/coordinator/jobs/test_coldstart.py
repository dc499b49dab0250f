"""Cold starts: the pure stage split, the tracker that spots fresh workers' first jobs, and the
leader's recorder (in-memory store)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from coordinator._node_schema import (
    ColdStart,
    ColdStartHistory,
    NodeRecord,
    WorkerAssignment,
    nkeys,
)
from coordinator._schema import JobRecord
from coordinator.jobs._coldstart import (
    BOOT_WAIT_S,
    ColdStartRecorder,
    ColdStartTracker,
    FirstJob,
    cold_start_json,
    compute_cold_start,
)
from coordinator.store import open_store
from tide.api.nodes import NodeInventory, WeightRestore, WorkerBoot, WorkerReport

ASSIGNED = 100.0


def _assignment(worker: str = "w-1", created_at: float = ASSIGNED) -> WorkerAssignment:
    return WorkerAssignment(worker_id=worker, endpoint_id="ep", node_id="n-1", created_at=created_at)


def _boot(tier: str = "t1") -> WorkerBoot:
    restores = [WeightRestore(model_id="m", tier=tier, nbytes=1 << 30, seconds=0.25, started_at=102.0)]
    return WorkerBoot(process_started_at=100.5, imported_at=102.0, restored_at=102.3, restores=restores)


def _report(boot: WorkerBoot | None, worker: str = "w-1") -> WorkerReport:
    return WorkerReport(worker_id=worker, endpoint_id="ep", state="initializing", started_at=100.4, boot=boot)


def _first(**kw: Any) -> FirstJob:
    fields: dict[str, Any] = dict(job_id="j-1", endpoint_id="ep", worker_id="w-1", submitted_at=99.0)
    fields |= dict(taken_at=102.5, finished_at=103.0)
    return FirstJob(**(fields | kw))


def _by_stage(cs: ColdStart) -> dict[str, float]:
    return {s.stage: round(s.seconds, 6) for s in cs.stages}


def test_stages_split_the_wait_with_the_workers_boot_report() -> None:
    cs = compute_cold_start(_first(), _assignment(), _report(_boot()))
    assert _by_stage(cs) == {
        "placement": 1.0,
        "process_start": 0.5,
        "runtime_import": 1.5,
        "weight_restore": 0.25,
        "handler_ready": 0.2,
        "first_job": 0.5,
    }
    assert (cs.weight_tier, cs.weight_bytes, cs.complete, cs.total_s) == ("t1", 1 << 30, True, 4.0)
    assert cold_start_json(cs)["stages"][3] == {"stage": "weight_restore", "ms": 250.0, "tier": "t1"}


def test_without_a_boot_report_imports_and_weights_are_part_of_handler_ready() -> None:
    cs = compute_cold_start(_first(), _assignment(), _report(None))
    assert _by_stage(cs) == pytest.approx(
        {"placement": 1.0, "process_start": 0.4, "handler_ready": 2.1, "first_job": 0.5}
    )
    assert (cs.weight_tier, cs.complete) == ("", False)
    assert [s.stage for s in compute_cold_start(_first(), _assignment(), None).stages] == [
        "placement",
        "handler_ready",
        "first_job",
    ]


def test_clock_skew_shows_as_zero_and_the_farthest_tier_wins() -> None:
    boot = msgspec.structs.replace(_boot(), process_started_at=99.0)  # host clock behind
    boot = msgspec.structs.replace(
        boot, restores=[*boot.restores, WeightRestore(model_id="m2", tier="source", nbytes=5, seconds=0.1)]
    )
    cs = compute_cold_start(_first(submitted_at=101.0), _assignment(), _report(boot))
    assert _by_stage(cs)["placement"] == 0.0 and _by_stage(cs)["process_start"] == 0.0
    assert cs.weight_tier == "source" and cs.weight_bytes == (1 << 30) + 5
    assert all(s.seconds >= 0 for s in cs.stages)


def _view(*assignments: WorkerAssignment, reports: list[WorkerReport] | None = None) -> Any:
    record = NodeRecord(id="n-1", inventory=NodeInventory(hostname="n-1"), workers=reports or [])
    return SimpleNamespace(
        assignments={a.worker_id: a for a in assignments},
        nodes={"n-1": (record, 1)},
        cluster_changed=None,
    )


def _job(job_id: str, status: str, worker: str = "w-1", **kw: Any) -> JobRecord:
    fields: dict[str, Any] = dict(
        id=job_id, endpoint_id="ep", status=status, created_at=99.0, worker_id=worker
    )
    return JobRecord(**(fields | kw))


def test_tracker_notes_only_the_first_job_of_workers_placed_while_it_watched() -> None:
    view = _view(_assignment("w-1"), _assignment("w-old", created_at=10.0), reports=[_report(_boot())])
    tracker = ColdStartTracker(view, clock=lambda: 50.0)
    tracker.observe(_job("j-1", "IN_PROGRESS", started_at=102.5))
    tracker.observe(_job("j-2", "IN_PROGRESS", started_at=103.5))  # its second job
    tracker.observe(_job("j-0", "IN_PROGRESS", worker="w-old", started_at=102.0))  # placed before
    assert tracker.of_job(_job("j-1", "IN_PROGRESS")) is None  # not finished yet
    tracker.observe(_job("j-1", "COMPLETED", started_at=102.5, finished_at=103.0))
    tracker.observe(_job("j-2", "COMPLETED", started_at=103.5, finished_at=104.0))
    tracker.observe(_job("j-0", "COMPLETED", worker="w-old", started_at=102.0, finished_at=103.0))
    cs = tracker.of_job(_job("j-1", "COMPLETED"))
    assert cs is not None and cs.complete and cs.weight_tier == "t1"
    assert tracker.of_worker("w-1") == cs
    assert tracker.of_job(_job("j-2", "COMPLETED")) is None
    assert tracker.of_job(_job("j-0", "COMPLETED", worker="w-old")) is None
    assert tracker.due(now=104.0) == [cs]


def test_a_first_job_that_came_after_the_worker_was_placed_is_no_cold_start() -> None:
    """workersMin >= 1: the worker started without waiting jobs; its first job waited for nothing."""
    view = _view(_assignment("w-1"), reports=[_report(_boot())])
    tracker = ColdStartTracker(view, clock=lambda: 50.0)
    late = _job("j-1", "COMPLETED", created_at=ASSIGNED + 60, started_at=ASSIGNED + 60, finished_at=161.0)
    tracker.observe(late)
    tracker.observe(_job("j-2", "COMPLETED", created_at=90.0, started_at=162.0, finished_at=163.0))
    assert tracker.of_job(late) is None and tracker.of_worker("w-1") is None
    assert tracker.due(now=170.0) == []


def test_tracker_waits_for_the_boot_report_then_records_without_it() -> None:
    view = _view(_assignment("w-1"), reports=[_report(None)])
    tracker = ColdStartTracker(view, clock=lambda: 50.0)
    tracker.observe(_job("j-1", "IN_PROGRESS", started_at=102.5))
    tracker.observe(_job("j-1", "COMPLETED", started_at=102.5, finished_at=103.0))
    assert tracker.due(now=104.0) == []
    (late,) = tracker.due(now=103.0 + BOOT_WAIT_S + 1)
    assert not late.complete
    record = NodeRecord(id="n-1", inventory=NodeInventory(hostname="n-1"), workers=[_report(_boot())])
    view.nodes["n-1"] = (record, 2)  # the report came after all
    (joined,) = tracker.due(now=104.0)
    assert joined.complete and tracker.of_job(_job("j-1", "COMPLETED")) == joined


def test_history_puts_reach_listeners_once_and_not_on_replay() -> None:
    tracker = ColdStartTracker(_view(), clock=lambda: 0.0)
    seen: list[str] = []
    tracker.listeners.append(lambda cs: seen.append(cs.job_id))
    cs = compute_cold_start(_first(), _assignment(), None)
    old = compute_cold_start(_first(job_id="j-0"), _assignment(), None)
    tracker.apply_history("ep", msgspec.json.encode(ColdStartHistory(recent=[old])), 5, replay=True)
    tracker.apply_history("ep", msgspec.json.encode(ColdStartHistory(recent=[old, cs])), 6, replay=False)
    tracker.apply_history("ep", msgspec.json.encode(ColdStartHistory(recent=[old, cs])), 6, replay=False)
    assert seen == ["j-1"] and tracker.last("ep") == cs and tracker.revisions["ep"] == 6
    tracker.apply_history("ep", None, 7, replay=False)
    assert tracker.last("ep") is None


async def test_recorder_appends_to_the_endpoint_history_under_its_revision() -> None:
    store = open_store("memory://")
    try:
        view: Any = _view(_assignment("w-1"), reports=[_report(_boot())])
        tracker = ColdStartTracker(view, clock=lambda: 0.0)
        recorder = ColdStartRecorder(store, view, tracker)
        starts = [
            compute_cold_start(_first(job_id=f"j-{i}", finished_at=103.0 + i), _assignment(), None)
            for i in range(7)
        ]
        for cs in starts:
            await recorder._record(tracker, cs)
        kv = await store.get(nkeys.coldstarts("ep"))
        assert kv is not None
        hist = msgspec.json.decode(kv.value, type=ColdStartHistory)
        assert [c.job_id for c in hist.recent] == [f"j-{i}" for i in range(2, 7)]  # the last five
        tracker.revisions["ep"] = 1  # a stale view: the guarded write does not land
        await recorder._record(tracker, compute_cold_start(_first(job_id="j-x"), _assignment(), None))
        assert (await store.get(nkeys.coldstarts("ep"))).value == kv.value  # type: ignore[union-attr]
    finally:
        await store.close()


def test_tide_endpoint_get_shows_the_last_cold_start() -> None:
    from tide.cli._endpoints import _cold_start_text

    cs = cold_start_json(compute_cold_start(_first(), _assignment(), _report(_boot())))
    text = _cold_start_text(cs, now=110.0)
    assert text.splitlines()[0] == "last cold start (w-1 on n-1, 7s ago)"
    assert "weight restore:  250.0 ms  (from t1)" in text and "total:" in text
