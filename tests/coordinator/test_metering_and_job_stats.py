"""The pure parts of two restart-proof counters (issue 12): when a removed worker's usage
record closes (``plan_usage_closes``), and /health's job counters as stored totals plus the
changes a replica saw after them (``JobStats``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordinator._node_schema import NodeRecord, UsageRecord
from coordinator._schema import JobRecord, encode
from coordinator.control._metering import plan_usage_closes
from coordinator.store import KeyValue, WatchEvent
from coordinator.view import JOBSTATS, JobStats
from tide.api.nodes import NodeInventory, WorkerReport


def _usage(worker: str, *, unassigned_at: float = 100.0) -> UsageRecord:
    return UsageRecord(
        worker_id=worker,
        endpoint_id="ep",
        node_id="h1",
        price_key="H100-80GB",
        gpus=1,
        started_at=10.0,
        unassigned_at=unassigned_at,
    )


def _node(beat: float, reports: dict[str, str], *, lost: bool = False) -> NodeRecord:
    workers = [WorkerReport(worker_id=w, endpoint_id="ep", state=s) for w, s in reports.items()]  # type: ignore[arg-type]
    return NodeRecord(
        id="h1", inventory=NodeInventory(hostname="h1"), last_heartbeat=beat, workers=workers, lost=lost
    )


def test_assigned_workers_and_live_processes_stay_open() -> None:
    open_ = {"w1": _usage("w1"), "w2": _usage("w2")}
    nodes = {"h1": _node(150.0, {"w2": "stopping"})}
    assert plan_usage_closes(open_, {"w1"}, nodes, now=200.0) == {}


def test_a_heartbeat_from_before_the_removal_proves_nothing() -> None:
    assert plan_usage_closes({"w1": _usage("w1")}, set(), {"h1": _node(99.0, {})}, now=200.0) == {}


def test_closed_at_the_report_that_no_longer_lists_the_process() -> None:
    for reports in ({}, {"w1": "exited"}):
        closed = plan_usage_closes({"w1": _usage("w1")}, set(), {"h1": _node(150.0, reports)}, now=200.0)
        assert closed["w1"].stopped_at == 150.0


def test_lost_or_missing_host_closes_at_its_last_sign_of_life() -> None:
    lost = {"h1": _node(120.0, {"w1": "running"}, lost=True)}
    assert plan_usage_closes({"w1": _usage("w1")}, set(), lost, now=200.0)["w1"].stopped_at == 120.0
    assert plan_usage_closes({"w1": _usage("w1")}, set(), {}, now=200.0)["w1"].stopped_at == 200.0


@given(beat=st.floats(0, 1e6), unassigned=st.floats(0, 1e6), now=st.floats(0, 1e6), lost=st.booleans())
def test_a_close_never_ends_before_the_unassignment(
    beat: float, unassigned: float, now: float, lost: bool
) -> None:
    closed = plan_usage_closes(
        {"w1": _usage("w1", unassigned_at=unassigned)}, set(), {"h1": _node(beat, {}, lost=lost)}, now
    )
    for u in closed.values():
        assert u.stopped_at >= max(unassigned, u.started_at)


def _job(i: int, status: str, retries: int = 0) -> JobRecord:
    return JobRecord(id=f"j{i}", endpoint_id="ep", status=status, created_at=0.0, retries=retries)  # type: ignore[arg-type]


def _stored_event(stats: JobStats, through: int, mod: int) -> WatchEvent:
    [(ep, record, _)] = stats.plan_flush(through)
    kv = KeyValue(
        key=JOBSTATS + ep.encode(), value=encode(record), create_revision=1, mod_revision=mod, version=1
    )
    return WatchEvent(type="put", kv=kv, revision=mod)


_CHANGES = st.lists(
    st.tuples(
        st.integers(0, 20),
        st.sampled_from(["COMPLETED", "FAILED", "IN_QUEUE", "IN_PROGRESS"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=60,
)


def _until_finished(changes: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    """Each job's changes up to its final one: a finished record is never written again
    (the worker API ignores a result for a job in FINAL_STATES), and a job is requeued with
    retry number n once (the reaper's requeue writes retries + 1; nothing rewrites a queued
    record with the same count)."""
    finished: set[int] = set()
    requeued: set[tuple[int, int]] = set()
    out = []
    for job, status, retries in changes:
        if job in finished or (status == "IN_QUEUE" and retries and (job, retries) in requeued):
            continue
        out.append((job, status, retries))
        if status in ("COMPLETED", "FAILED"):
            finished.add(job)
        if status == "IN_QUEUE" and retries:
            requeued.add((job, retries))
    return out


@given(changes=_CHANGES, cut=st.integers(0, 60))
def test_job_counters_are_unchanged_by_storing_them(changes: list[tuple[int, str, int]], cut: int) -> None:
    """Counts before a fold equal the stored totals plus what came after: a replica that
    saw everything, and one that starts from the stored record after the fold, agree."""
    changes = _until_finished(changes)
    stats = JobStats()
    for rev, (job, status, retries) in enumerate(changes, start=1):
        stats.observe(_job(job, status, retries), rev)
    before = stats.counts("ep")
    through = min(cut, len(changes))
    if stats.plan_flush(through):
        stats.apply_stored(_stored_event(stats, through, mod=len(changes) + 1))
    assert stats.counts("ep") == before

    restarted = JobStats()  # lists the stored record, then sees the changes after it (replayed)
    if (stored := stats._stored.get("ep")) is not None:
        kv = KeyValue(
            key=JOBSTATS + b"ep",
            value=encode(stored[0]),
            create_revision=1,
            mod_revision=stored[1],
            version=1,
        )
        restarted.apply_stored(WatchEvent(type="put", kv=kv, revision=stored[1]))
    for rev, (job, status, retries) in enumerate(changes, start=1):
        restarted.observe(_job(job, status, retries), rev)
    assert restarted.counts("ep") == before


def test_a_rewritten_finished_job_counts_once() -> None:
    stats = JobStats()
    stats.observe(_job(1, "IN_QUEUE", retries=1), 1)
    stats.observe(_job(1, "COMPLETED", retries=1), 2)
    stats.observe(_job(1, "COMPLETED", retries=1), 3)
    assert stats.counts("ep") == {"COMPLETED": 1, "FAILED": 0, "RETRIED": 1}
