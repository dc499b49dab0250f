"""Cold starts: each fresh or resumed worker's start, split into stages, as its first job saw it.

Who knows what (every time is unix seconds; host times come from the worker's host):

    job submitted            job record            (coordinator)
    worker placed            assignment created_at (the leader's scheduler)
    process started          WorkerReport.boot.process_started_at, else .started_at (noded)
    imports done             boot.imported_at: the handler's first flashboot.load began (worker)
    weights restored         boot.restores (tier, bytes, seconds), boot.restored_at (worker)
    first job taken, done    the first job's started_at and finished_at (coordinator)

Stages: placement (submitted -> placed), process_start (placed -> process started: noded's pick-up
and the runtime's start), runtime_import (-> imports done), weight_restore (the loads, by tier),
handler_ready (-> first job taken), first_job (taken -> done).  Without a boot report (a handler
that loads nothing through FlashBoot) imports and weights are part of handler_ready.

A resumed worker (issue 16: suspended when its endpoint scaled down, thawed in place on scale-up)
starts a new stretch at its assignment's ``resumed_at``; the first job of that stretch which was
waiting before the resume is its cold start, ``path: resume``, joined with the worker's resume record
(WorkerReport.resume: when noded began the thaw, ``thaw_s``, ``device_restore_s``).  Stages:
placement (submitted -> the scheduler's resume decision), thaw (-> thawed: noded's pick-up of the
flip and the runtime's thaw), device_restore (cuda-checkpoint putting its memory back on the GPU;
0 without one), handler_ready (-> first job taken: the SDK's job-take loop waking up), first_job.
A resume that failed and fell back to a fresh start is reported as a fresh start from the decision,
``path: fresh`` with the resume's ``reason``.

``ColdStartTracker`` runs on every replica, fed by the view's watch: it notes the first job each
worker takes (for workers placed after this replica started watching, so that it saw all their
jobs) and, when that job was waiting before the worker was placed (a cold start: the job waited
for a worker to start, not a warm worker for a job), joins it with the worker's assignment and
its node's report; the job's status envelope shows it as ``coldStart``.  ``ColdStartRecorder``
(leader only) appends each finished cold start, once the worker's boot report is in (or clearly
will not come), to ``/tide/coldstarts/<ep>``: the admin API's ``lastColdStart`` and the metrics'
histograms come from there, on every replica.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from coordinator._node_schema import ColdStart, ColdStartHistory, ColdStartStage, WorkerAssignment, nkeys
from coordinator._schema import JobRecord, encode
from coordinator.store import Compare, Put, Store
from coordinator.view import ClusterView
from tide.api.nodes import WorkerReport, WorkerResume

__all__ = ["ColdStartRecorder", "ColdStartTracker", "FirstJob", "cold_start_json", "compute_cold_start"]

log = logging.getLogger("tide.coordinator.coldstart")

_TIER_RANK = {"t0": 0, "t1": 1, "t2": 2, "source": 3}
_KEPT = 10_000  # first jobs remembered (a bounded map: job ids are never reused)
_HISTORY = 5  # cold starts kept per endpoint in the store
BOOT_WAIT_S = 15.0  # after the first job, how long the recorder waits for a boot report
_history_decoder = msgspec.json.Decoder(ColdStartHistory)


@dataclass(slots=True)
class FirstJob:
    job_id: str
    endpoint_id: str
    worker_id: str
    submitted_at: float
    taken_at: float
    finished_at: float = 0.0  # 0 = still running
    resumed_at: float = 0.0  # a resumed worker's stretch: the scheduler's resume (0 = a fresh worker)
    suspended_at: float = 0.0  # ... and the suspend before it


def _stretch(a: WorkerAssignment) -> str:
    """Which stretch of the worker's life a job belongs to: its placement, or its latest resume."""
    return f"{a.worker_id}@{a.resumed_at!r}" if a.resumed_at else a.worker_id


def _placed_at(a: WorkerAssignment) -> float:
    return a.resumed_at or a.created_at


def compute_cold_start(first: FirstJob, a: WorkerAssignment, report: WorkerReport | None) -> ColdStart:
    """Stages of one cold start (see the module docstring).  Pure; negative spans (clock skew
    between hosts) are shown as 0."""
    if first.resumed_at:
        rec = report.resume if report else None
        # this resume's record: after the suspend that preceded it, before its first job was done
        if rec is not None and first.suspended_at < rec.resumed_at <= first.finished_at:
            if rec.path == "resume":
                return _resumed(first, a, rec)
            return msgspec.structs.replace(_fresh(first, a, report), reason=rec.reason)
        return _resumed(first, a, None)
    return _fresh(first, a, report)


def _resumed(first: FirstJob, a: WorkerAssignment, rec: WorkerResume | None) -> ColdStart:
    stages = [ColdStartStage(stage="placement", seconds=max(0.0, first.resumed_at - first.submitted_at))]
    at = first.resumed_at
    if rec is not None:
        thawed = rec.resumed_at + rec.thaw_s
        stages.append(ColdStartStage(stage="thaw", seconds=max(0.0, thawed - rec.device_restore_s - at)))
        stages.append(ColdStartStage(stage="device_restore", seconds=rec.device_restore_s))
        at = max(at, thawed)
    stages.append(ColdStartStage(stage="handler_ready", seconds=max(0.0, first.taken_at - at)))
    stages.append(ColdStartStage(stage="first_job", seconds=max(0.0, first.finished_at - first.taken_at)))
    return _cold_start(first, a, stages, complete=rec is not None, path="resume")


def _fresh(first: FirstJob, a: WorkerAssignment, report: WorkerReport | None) -> ColdStart:
    boot = report.boot if report else None
    placed = first.resumed_at or a.created_at  # this stretch's start, whatever came after it
    if boot is not None and boot.process_started_at and boot.process_started_at < first.suspended_at:
        boot = None  # the boot report of the process before the suspend, not of this start
    stages = [ColdStartStage(stage="placement", seconds=max(0.0, placed - first.submitted_at))]
    at = placed  # the end of the stage before

    def stage(name: str, until: float, tier: str = "") -> None:
        nonlocal at
        stages.append(ColdStartStage(stage=name, seconds=max(0.0, until - at), tier=tier))
        at = max(at, until)

    started = (boot.process_started_at if boot else 0.0) or (report.started_at if report else 0.0)
    if started:
        stage("process_start", started)
    tier, nbytes = "", 0
    if boot and boot.imported_at and boot.restores:
        stage("runtime_import", boot.imported_at)
        tier = max((r.tier for r in boot.restores), key=lambda t: _TIER_RANK.get(t, 4))
        nbytes = sum(r.nbytes for r in boot.restores)
        seconds = sum(r.seconds for r in boot.restores)
        stages.append(ColdStartStage(stage="weight_restore", seconds=seconds, tier=tier))
        at = max(at, boot.restored_at)
    stage("handler_ready", first.taken_at)
    stage("first_job", first.finished_at)
    return _cold_start(first, a, stages, complete=boot is not None, tier=tier, nbytes=nbytes)


def _cold_start(
    first: FirstJob,
    a: WorkerAssignment,
    stages: list[ColdStartStage],
    *,
    complete: bool,
    path: str = "fresh",
    tier: str = "",
    nbytes: int = 0,
) -> ColdStart:
    return ColdStart(
        endpoint_id=first.endpoint_id,
        worker_id=first.worker_id,
        node_id=a.node_id,
        job_id=first.job_id,
        submitted_at=first.submitted_at,
        finished_at=first.finished_at,
        total_s=max(0.0, first.finished_at - first.submitted_at),
        stages=stages,
        weight_tier=tier,
        weight_bytes=nbytes,
        complete=complete,
        path=path,
    )


def cold_start_json(cs: ColdStart) -> dict[str, Any]:
    """How the APIs show a cold start (milliseconds, camelCase)."""
    stages = []
    for s in cs.stages:
        row: dict[str, Any] = {"stage": s.stage, "ms": round(s.seconds * 1000, 1)}
        if s.tier:
            row["tier"] = s.tier
        stages.append(row)
    return {
        "workerId": cs.worker_id,
        "nodeId": cs.node_id,
        "jobId": cs.job_id,
        "finishedAt": cs.finished_at,
        "totalMs": round(cs.total_s * 1000, 1),
        "stages": stages,
        "weightTier": cs.weight_tier,
        "weightBytes": cs.weight_bytes,
        "complete": cs.complete,
        "path": cs.path,
        **({"reason": cs.reason} if cs.reason else {}),
    }


class ColdStartTracker:
    """One per view (every replica), subscribed to its job feed (``view.subscribe``); every
    method is cheap."""

    def __init__(self, view: ClusterView, *, clock: Callable[[], float] = time.time) -> None:
        self._view = view
        self._since = clock()  # workers placed before this were started before we watched
        self._first: OrderedDict[str, FirstJob] = OrderedDict()  # worker stretch -> its first job
        self._by_job: dict[str, FirstJob] = {}
        self._done: OrderedDict[str, ColdStart] = OrderedDict()  # job -> joined once final
        self._pending: dict[str, None] = {}  # final first jobs no history holds yet
        self.recorded: OrderedDict[str, None] = OrderedDict()  # job ids in some history
        self.history: dict[str, ColdStartHistory] = {}  # endpoint -> stored history
        self.revisions: dict[str, int] = {}
        self.listeners: list[Callable[[ColdStart], None]] = []  # a new cold start was recorded

    # -- the feed --------------------------------------------------------
    def observe(self, record: JobRecord) -> None:
        """A job record changed (put).  Notes a fresh or resumed worker's first job and its end."""
        worker = record.worker_id
        if not worker or record.status == "IN_QUEUE":
            return
        a = self._view.assignments.get(worker)
        first = self._first.get(_stretch(a)) if a is not None else self._first.get(worker)
        if first is None:
            if a is None or _placed_at(a) < self._since or record.started_at < a.resumed_at:
                return  # placed before we watched, or a job of the stretch before the resume
            first = FirstJob(
                job_id=record.id,
                endpoint_id=record.endpoint_id,
                worker_id=worker,
                submitted_at=record.created_at,
                taken_at=record.started_at,
                resumed_at=a.resumed_at,
                suspended_at=a.suspended_at if a.resumed_at else 0.0,
            )
            self._first[_stretch(a)] = first
            if record.created_at <= _placed_at(a):  # it waited for this worker to start (or resume)
                self._by_job[record.id] = first
            self._trim()
        if record.id not in self._by_job or first.job_id != record.id or first.finished_at:
            return
        if record.finished_at:
            first.finished_at = record.finished_at
            if self._join(first) is not None:
                self._pending[record.id] = None

    def apply_history(self, ep: str, value: bytes | None, revision: int, *, replay: bool) -> None:
        """``/tide/coldstarts/<ep>`` changed; new entries go to the listeners (not on a replay)."""
        if value is None:
            self.history.pop(ep, None)
            self.revisions.pop(ep, None)
            return
        hist = _history_decoder.decode(value)
        for cs in hist.recent:
            if cs.job_id not in self.recorded:
                self.recorded[cs.job_id] = None
                self._pending.pop(cs.job_id, None)
                if not replay:
                    for listener in self.listeners:
                        listener(cs)
        while len(self.recorded) > _KEPT:
            self.recorded.popitem(last=False)
        self.history[ep], self.revisions[ep] = hist, revision

    def relisted(self) -> None:
        """The view lists the store afresh: the histories come again as puts."""
        self.history.clear()

    # -- queries ---------------------------------------------------------
    def of_job(self, record: JobRecord) -> ColdStart | None:
        """The cold start ``record`` waited for, if it was a fresh worker's first job."""
        first = self._by_job.get(record.id)
        if first is None or not first.finished_at:
            return None
        done = self._done.get(record.id)
        if done is not None and done.complete:
            return done
        return self._join(first) or done

    def of_worker(self, worker: str) -> ColdStart | None:
        """The worker's latest cold start (its start or last resume), if its first job waited for it
        and is done."""
        a = self._view.assignments.get(worker)
        first = self._first.get(_stretch(a) if a is not None else worker)
        return self._done.get(first.job_id) if first is not None else None

    def last(self, ep: str) -> ColdStart | None:
        hist = self.history.get(ep)
        return hist.recent[-1] if hist and hist.recent else None

    def due(self, now: float) -> list[ColdStart]:
        """Finished cold starts to record: with the worker's boot report, or without once it is
        gone or has not reported one within BOOT_WAIT_S."""
        out = []
        for job_id in list(self._pending):
            first = self._by_job.get(job_id)
            if first is None or job_id in self.recorded:
                self._pending.pop(job_id, None)
                continue
            joined = self._join(first) or self._done[job_id]
            gone = first.worker_id not in self._view.assignments
            if joined.complete or gone or now - first.finished_at > BOOT_WAIT_S:
                out.append(joined)
        return sorted(out, key=lambda cs: cs.finished_at)

    def _join(self, first: FirstJob) -> ColdStart | None:
        a = self._view.assignments.get(first.worker_id)
        if a is None:
            return None
        found = self._view.nodes.get(a.node_id)
        workers = found[0].workers if found else []
        report = next((w for w in workers if w.worker_id == first.worker_id), None)
        cs = compute_cold_start(first, a, report)
        self._done[first.job_id] = cs
        return cs

    def _trim(self) -> None:
        while len(self._first) > _KEPT:
            _, old = self._first.popitem(last=False)
            self._by_job.pop(old.job_id, None)
            self._done.pop(old.job_id, None)
            self._pending.pop(old.job_id, None)


class ColdStartRecorder:
    """Leader loop: append due cold starts to their endpoint's history (a guarded write)."""

    def __init__(
        self,
        store: Store,
        view: ClusterView,
        tracker: ColdStartTracker,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._view = view
        self._tracker = tracker
        self._clock = clock

    async def run(self) -> None:
        await self._view.ready.wait()
        tracker = self._tracker
        while True:
            for cs in tracker.due(self._clock()):
                await self._record(tracker, cs)
            await self._view.cluster_changed.wait(1.0)

    async def _record(self, tracker: ColdStartTracker, cs: ColdStart) -> None:
        ep = cs.endpoint_id
        old = tracker.history.get(ep, ColdStartHistory())
        recent = sorted([*old.recent, cs], key=lambda c: c.finished_at)[-_HISTORY:]
        key = nkeys.coldstarts(ep)
        rev = tracker.revisions.get(ep, 0)
        guard = Compare(key=key, target="mod", op="==", value=rev)
        value = encode(ColdStartHistory(recent=recent))
        res = await self._store.txn([guard], [Put(key=key, value=value)])
        if res.succeeded:
            tracker.apply_history(ep, value, res.revision, replay=False)  # read our write now
        else:
            log.info("cold starts of %s changed concurrently; recording on the next pass", ep)
