"""Cold starts of resumed workers (issue 16): the ``resume`` path, its stages from the worker's
resume record, a failed resume reported as a fresh start, and the tracker noting the first job of
each stretch of a worker's life (its placement, then every resume)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from coordinator._node_schema import ColdStart, NodeRecord, WorkerAssignment
from coordinator._schema import JobRecord
from coordinator.jobs._coldstart import ColdStartTracker, FirstJob, cold_start_json, compute_cold_start
from tide.api.nodes import NodeInventory, WorkerBoot, WorkerReport, WorkerResume
from tide.cli._endpoints import _cold_start_text

SUSPENDED, RESUMED = 150.0, 200.0


def _assignment(**kw: Any) -> WorkerAssignment:
    fields: dict[str, Any] = dict(worker_id="w-1", endpoint_id="ep", node_id="n-1", created_at=100.0)
    return WorkerAssignment(**(fields | dict(suspended_at=SUSPENDED, resumed_at=RESUMED) | kw))


def _resume(**kw: Any) -> WorkerResume:
    return WorkerResume(**(dict(path="resume", resumed_at=200.02, thaw_s=0.01, device_restore_s=0.0) | kw))


def _report(resume: WorkerResume | None, boot: WorkerBoot | None = None) -> WorkerReport:
    return WorkerReport(
        worker_id="w-1", endpoint_id="ep", state="initializing", started_at=100.4, boot=boot, resume=resume
    )


def _first(**kw: Any) -> FirstJob:
    fields: dict[str, Any] = dict(job_id="j-9", endpoint_id="ep", worker_id="w-1", submitted_at=199.9)
    fields |= dict(taken_at=200.1, finished_at=200.12, resumed_at=RESUMED, suspended_at=SUSPENDED)
    return FirstJob(**(fields | kw))


def _by_stage(cs: ColdStart) -> dict[str, float]:
    return {s.stage: round(s.seconds, 6) for s in cs.stages}


def test_resume_stages_come_from_the_workers_resume_record() -> None:
    cs = compute_cold_start(_first(), _assignment(), _report(_resume(thaw_s=0.03, device_restore_s=0.02)))
    assert cs.path == "resume" and cs.complete and cs.reason == ""
    assert _by_stage(cs) == pytest.approx(
        {"placement": 0.1, "thaw": 0.03, "device_restore": 0.02, "handler_ready": 0.05, "first_job": 0.02}
    )
    assert cs.total_s == pytest.approx(0.22)
    out = cold_start_json(cs)
    assert out["path"] == "resume" and "reason" not in out
    assert [s["stage"] for s in out["stages"]][1:3] == ["thaw", "device_restore"]


def test_a_resume_record_of_an_earlier_resume_is_not_this_ones() -> None:
    old = _resume(resumed_at=120.0)  # before the suspend that preceded this resume
    cs = compute_cold_start(_first(), _assignment(), _report(old))
    assert cs.path == "resume" and not cs.complete
    assert [s.stage for s in cs.stages] == ["placement", "handler_ready", "first_job"]
    assert _by_stage(cs)["handler_ready"] == pytest.approx(0.1)  # from the decision to the take


def test_a_failed_resume_is_a_fresh_start_from_the_decision_with_its_reason() -> None:
    failed = _resume(path="fresh", reason="cgroup.freeze: no such file")
    boot = WorkerBoot(process_started_at=200.3, imported_at=0.0)  # the new process's own report
    cs = compute_cold_start(_first(taken_at=201.0, finished_at=201.1), _assignment(), _report(failed, boot))
    assert (cs.path, cs.reason, cs.complete) == ("fresh", "cgroup.freeze: no such file", True)
    assert _by_stage(cs)["placement"] == pytest.approx(0.1)
    assert _by_stage(cs)["process_start"] == pytest.approx(0.3)
    assert cold_start_json(cs)["reason"] == "cgroup.freeze: no such file"


def test_a_failed_resume_ignores_the_boot_report_of_the_process_before_the_suspend() -> None:
    stale = WorkerBoot(process_started_at=100.5, imported_at=101.0)
    cs = compute_cold_start(_first(), _assignment(), _report(_resume(path="fresh", reason="x"), stale))
    assert cs.path == "fresh" and not cs.complete


def _view(a: WorkerAssignment, report: WorkerReport | None = None) -> Any:
    record = NodeRecord(id="n-1", inventory=NodeInventory(hostname="n-1"), workers=[report] if report else [])
    return SimpleNamespace(assignments={a.worker_id: a}, nodes={"n-1": (record, 1)}, cluster_changed=None)


def _job(job_id: str, status: str, **kw: Any) -> JobRecord:
    fields: dict[str, Any] = dict(id=job_id, endpoint_id="ep", status=status, worker_id="w-1", created_at=0.0)
    return JobRecord(**(fields | kw))


def test_tracker_notes_the_first_job_of_each_stretch() -> None:
    fresh = _assignment(suspended_at=0.0, resumed_at=0.0)
    view = _view(fresh)
    tracker = ColdStartTracker(view, clock=lambda: 50.0)
    tracker.observe(_job("j-1", "COMPLETED", created_at=99.0, started_at=102.0, finished_at=103.0))
    tracker.observe(_job("j-2", "COMPLETED", created_at=104.0, started_at=104.0, finished_at=104.1))
    first_cs = tracker.of_job(_job("j-1", "COMPLETED"))
    assert first_cs is not None and first_cs.path == "fresh"
    # suspended at 150, resumed at 200 for j-9 (waiting since 199.9); the report shows the thaw
    view.assignments["w-1"] = _assignment()
    view.nodes["n-1"] = (msgspec.structs.replace(view.nodes["n-1"][0], workers=[_report(_resume())]), 2)
    tracker.observe(_job("j-9", "IN_PROGRESS", created_at=199.9, started_at=200.1))
    tracker.observe(_job("j-10", "COMPLETED", created_at=200.2, started_at=200.2, finished_at=200.3))
    tracker.observe(_job("j-9", "COMPLETED", created_at=199.9, started_at=200.1, finished_at=200.12))
    cs = tracker.of_job(_job("j-9", "COMPLETED"))
    assert cs is not None and (cs.path, cs.job_id, cs.complete) == ("resume", "j-9", True)
    assert tracker.of_job(_job("j-10", "COMPLETED")) is None  # the stretch's second job
    assert tracker.of_worker("w-1") == cs
    assert [c.job_id for c in tracker.due(201.0)] == ["j-1", "j-9"]  # j-1: no boot report, timed out
    before = tracker.of_job(_job("j-1", "COMPLETED"))  # the start before is kept, its stages its own
    assert before is not None and (before.path, before.total_s) == ("fresh", first_cs.total_s)
    assert _by_stage(before)["placement"] == 1.0


def test_a_job_submitted_after_the_resume_is_no_cold_start() -> None:
    view = _view(_assignment(), _report(_resume()))
    tracker = ColdStartTracker(view, clock=lambda: 50.0)
    tracker.observe(_job("j-1", "COMPLETED", created_at=RESUMED + 5, started_at=205.1, finished_at=205.2))
    assert tracker.of_job(_job("j-1", "COMPLETED")) is None and tracker.due(300.0) == []


def test_tide_endpoint_get_names_the_resume_path() -> None:
    cs = compute_cold_start(_first(), _assignment(), _report(_resume()))
    text = _cold_start_text(cold_start_json(cs), now=201.0)
    assert text.startswith("last cold start (resume of w-1 on n-1")
    assert "thaw" in text and "device restore" in text
