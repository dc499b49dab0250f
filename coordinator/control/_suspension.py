"""The scheduler's side of suspended workers (issue 16): read the view into the pure
:func:`plan_suspend`, and write its decisions (assignments and usage records).

Only idle workers are suspended: a candidate is one the reconciler removes whose
autoscaler view is ``idle`` with no claim (the job-take route then hands it no job:
coordinator/jobs/_worker_ops.py), on a healthy host.  A suspended worker that
nonetheless holds a claim (a take that raced the mark) is resumed at once, before
noded's settle delay lets it freeze (ARCHITECTURE.md, "Suspended workers").

Billing: a suspend closes the worker's usage record into a segment key
(``usage/<worker>.<ms>``); a resume opens a fresh ``usage/<worker>``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import msgspec

from coordinator._node_schema import UsageRecord, WorkerAssignment, nkeys
from coordinator._schema import encode
from coordinator.scheduling import (
    PlacementPlan,
    ReconcilePlan,
    SuspendCandidate,
    SuspendedWorker,
    SuspendPlan,
    SuspendSettings,
    plan_evictions,
    plan_suspend,
)
from coordinator.store import Delete, Op, Put
from coordinator.view import ClusterView
from tide.api.nodes import WorkerReport

__all__ = ["Suspension", "usage_of"]


def usage_of(a: WorkerAssignment, now: float, *, started_at: float = 0.0) -> UsageRecord:
    return UsageRecord(
        worker_id=a.worker_id,
        endpoint_id=a.endpoint_id,
        node_id=a.node_id,
        price_key=a.price_key or a.gpu_type,
        gpus=max(1, len(a.devices)) if not a.mig_profile else 1,
        started_at=started_at or a.created_at,
    )


class Suspension:
    def __init__(self, view: ClusterView, settings: SuspendSettings) -> None:
        self._view = view
        self.settings = settings

    def suspended(self) -> list[WorkerAssignment]:
        return [a for a in self._view.assignments.values() if a.suspended]

    def claimed(self) -> set[str]:
        """Suspended workers holding a claim: resumed whatever the counts."""
        holders = {c.worker_id for c, _, _ in self._view.claims.values()}
        return {a.worker_id for a in self.suspended() if a.worker_id in holders}

    def budgets(self) -> dict[str, int]:
        return {
            node: rec.inventory.suspend_budget_bytes
            for node, (rec, _) in self._view.nodes.items()
            if not (rec.lost or rec.draining)
        }

    def plan(
        self, now: float, plan: ReconcilePlan, idle: Collection[str], running: Iterable[WorkerAssignment]
    ) -> SuspendPlan:
        view = self._view
        claimed = self.claimed()
        candidates = [
            SuspendCandidate(worker_id=w, endpoint_id=a.endpoint_id, node_id=a.node_id)
            for w in plan.remove
            if w in idle and (a := view.assignments.get(w)) is not None and a.endpoint_id in view.endpoints
        ]
        busy: dict[str, set[str]] = {}
        removed = set(plan.remove)
        for a in running:
            if a.worker_id not in removed:
                busy.setdefault(a.node_id, set()).update(a.devices)
        for w in claimed:  # resumed below whatever the counts: their devices are theirs again
            a = view.assignments[w]
            busy.setdefault(a.node_id, set()).update(a.devices)
        sp = plan_suspend(
            candidates=candidates,
            suspended=[self._frozen(a) for a in self.suspended() if a.worker_id not in claimed],
            want={ep: len(ids) for ep, ids in plan.add.items()},
            versions={ep: rec.version for ep, (rec, _) in view.endpoints.items()},
            budgets=self.budgets(),
            busy_devices=busy,
            now=now,
            settings=self.settings,
        )
        return msgspec.structs.replace(sp, resume=sorted(set(sp.resume) | claimed))

    def _frozen(self, a: WorkerAssignment) -> SuspendedWorker:
        rep = self._report(a)
        return SuspendedWorker(
            worker_id=a.worker_id,
            endpoint_id=a.endpoint_id,
            node_id=a.node_id,
            devices=list(a.devices),
            version=a.version,
            suspended_at=a.suspended_at,
            rss_bytes=rep.rss_bytes if rep else 0,
            exited=rep is not None and rep.state in ("exited", "unhealthy"),
        )

    def _report(self, a: WorkerAssignment) -> WorkerReport | None:
        node = self._view.nodes.get(a.node_id)
        return next((w for w in node[0].workers if w.worker_id == a.worker_id), None) if node else None

    def frozen_after(self, sp: SuspendPlan) -> list[SuspendedWorker]:
        """Who stays (or becomes) suspended once ``sp`` applies: their devices are free capacity."""
        view = self._view
        gone = set(sp.resume) | set(sp.drop)
        out = [self._frozen(a) for a in self.suspended() if a.worker_id not in gone]
        for w in sp.suspend:
            a = view.assignments[w]
            out.append(
                SuspendedWorker(worker_id=w, endpoint_id=a.endpoint_id, node_id=a.node_id, devices=a.devices)
            )
        return out

    @staticmethod
    def evictions(frozen: Iterable[SuspendedWorker], placement: PlacementPlan) -> list[str]:
        placed: dict[str, list[str]] = {}
        for pa in placement.assignments:
            placed.setdefault(pa.node_id, []).extend(pa.devices)
        return plan_evictions(frozen, placed)

    def ops(self, now: float, sp: SuspendPlan, removed: Collection[str]) -> list[Op]:
        """Mark the suspends and resumes; close or reopen their usage."""
        view = self._view
        ops: list[Op] = []
        for w in sp.suspend:
            a = view.assignments.get(w)
            if a is None or w in removed:
                continue
            ep = view.endpoints.get(a.endpoint_id)
            marked = msgspec.structs.replace(
                a, suspended=True, suspended_at=now, version=ep[0].version if ep else 0
            )
            ops.append(Put(key=nkeys.worker(a.node_id, w), value=encode(marked)))
            started = a.resumed_at or a.created_at
            closed = msgspec.structs.replace(usage_of(a, now, started_at=started), stopped_at=now)
            ops += [
                Put(key=nkeys.usage_segment(w, started), value=encode(closed)),
                Delete(key=nkeys.usage(w)),
            ]
        for w in sp.resume:
            a = view.assignments.get(w)
            if a is None or w in removed:
                continue
            back = msgspec.structs.replace(a, suspended=False, resumed_at=now)
            ops.append(Put(key=nkeys.worker(a.node_id, w), value=encode(back)))
            ops.append(Put(key=nkeys.usage(w), value=encode(usage_of(back, now, started_at=now))))
        return ops
