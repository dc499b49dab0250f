"""The leader's scheduling loop: autoscale → reconcile → place → apply.

Level-triggered: any change to queues, claims, nodes or assignments only wakes
the loop, which re-reads the view and plans from scratch with the pure
planners in coordinator/scheduling.  One transaction applies a plan, guarded
by the scheduling epoch key so two leaders (briefly, around an election)
cannot both commit plans computed from the same state.

Hosts whose heartbeats stop are marked lost: their workers are replaced
elsewhere and the claims of their jobs expire at once so the reaper requeues
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import msgspec

from coordinator._node_schema import UsageRecord, WorkerAssignment, nkeys
from coordinator._schema import encode, keys
from coordinator.control._mig_ahead_loop import MigAhead
from coordinator.control._mig_pass import MigPass
from coordinator.control._suspension import Suspension, usage_of
from coordinator.scheduling import (
    DEFAULT_AHEAD,
    DEFAULT_HOST_RESERVE,
    DEFAULT_SUSPEND,
    AheadSettings,
    ClusterSnapshot,
    CurrentWorker,
    HostReserve,
    NodeSnapshot,
    PlacementPlan,
    PlacementRequest,
    QueueStats,
    ScalerState,
    SuspendedWorker,
    SuspendSettings,
    WorkerView,
    compute_desired_workers,
    plan_placement,
    plan_reconcile,
)
from coordinator.store import Compare, Delete, Op, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import InvalidArgument, TideError
from tiered_storage import parse_model_ref

__all__ = ["Scheduler"]

log = logging.getLogger("tide.coordinator.scheduler")


def _new_ids() -> Iterator[str]:
    while True:
        yield f"w-{uuid.uuid4().hex[:12]}"


class Scheduler:
    def __init__(
        self,
        store: Store,
        view: ClusterView,
        *,
        lost_after_s: float = 15.0,
        mig_recut_interval_s: float = 30.0,
        host_reserve: HostReserve = DEFAULT_HOST_RESERVE,
        mig_ahead: AheadSettings = DEFAULT_AHEAD,
        suspend: SuspendSettings = DEFAULT_SUSPEND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._view = view
        self._lost_after = lost_after_s
        self._leading_since: float | None = None  # first tick of this leadership term
        self.mig_recut_interval_s = mig_recut_interval_s  # hysteresis: one re-cut per card per interval
        self.host_reserve = host_reserve  # CPU/RAM each host keeps back from workers
        self._clock = clock
        self._scaler: dict[str, ScalerState] = {}
        self.last_plan: PlacementPlan | None = None
        self.ahead = MigAhead(store, view, settings=mig_ahead)  # ahead-of-time re-cuts (rate-limits itself)
        self.suspension = Suspension(view, suspend)  # idle workers frozen instead of removed (issue 16)
        self._idle: set[str] = set()  # this pass: workers the autoscaler saw idle with no claim

    async def run(self) -> None:
        await self._view.ready.wait()
        self._leading_since = None  # a new term: hosts get a full lost-after to reach us
        while True:
            try:
                await self.tick(self._clock())
            except TideError as exc:
                log.warning("scheduling pass failed: %s", exc.message)
            await self._view.cluster_changed.wait(1.0)
            # At most ~20 passes a second: a burst of submits is one pass, not one per job.
            await asyncio.sleep(0.05)

    async def tick(self, now: float) -> None:
        if self._leading_since is None:
            self._leading_since = now
        await self._mark_lost(now)
        stop, targets = self._autoscale(now)
        ahead = await self.ahead.tick(now, targets)  # layouts the view may not show yet
        view = self._view
        running = [a for a in self._assignments() if not a.suspended]
        current = [CurrentWorker(worker_id=a.worker_id, endpoint_id=a.endpoint_id) for a in running]
        plan = plan_reconcile(current=current, desired=targets, new_ids=_new_ids(), stop=stop)
        sp = self.suspension.plan(now, plan, self._idle, running)
        if plan.empty and sp.empty:
            await self._save_reasons({})
            return
        removed = (set(plan.remove) - set(sp.suspend)) | set(sp.drop)
        requests = [
            PlacementRequest(endpoint_id=ep, spec=view.endpoints[ep][0].spec, worker_ids=ids[: sp.add[ep]])
            for ep, ids in sorted(plan.add.items())
            if sp.add.get(ep)
        ]
        frozen = self.suspension.frozen_after(sp)
        mig = MigPass(view, now=now, min_interval_s=self.mig_recut_interval_s, written=ahead)
        placement = plan_placement(
            self._snapshot(removed, mig, frozen),
            requests,
            slice_fitter=mig.fitter,
            host_reserve=self.host_reserve,
        )
        self.last_plan = placement
        removed |= set(self.suspension.evictions(frozen, placement))  # it cannot resume: its GPU is taken
        extra = self.suspension.ops(now, sp, removed)
        await self._apply(now, removed, placement, mig, extra)
        await self._save_reasons({**mig.reasons(placement), **placement.reasons})

    def _assignments(self) -> list[WorkerAssignment]:
        return sorted(self._view.assignments.values(), key=lambda a: (a.created_at, a.worker_id))

    def _autoscale(self, now: float) -> tuple[set[str], dict[str, int]]:
        """Which workers must go, and how many workers each endpoint should have."""
        view = self._view
        stop: set[str] = set()
        targets: dict[str, int] = {}
        by_ep: dict[str, list[WorkerAssignment]] = {}
        for a in self._assignments():
            node = view.nodes.get(a.node_id)
            if node is None or node[0].lost or node[0].draining or a.worker_id in view.retired:
                stop.add(a.worker_id)  # retired: it sent stopPod, recycle it
            if not a.suspended:  # a suspended worker is no worker of its endpoint: not capacity
                by_ep.setdefault(a.endpoint_id, []).append(a)
        self._idle = set()
        for ep, (endpoint, _) in view.endpoints.items():
            mine = [a for a in by_ep.get(ep, []) if a.worker_id not in stop]
            views = self._worker_views(ep, mine)
            decision = compute_desired_workers(
                endpoint.spec,
                self._stats(ep, now),
                views,
                self._scaler.get(ep, ScalerState()),
                now,
            )
            self._scaler[ep] = decision.state
            self._idle.update(w.worker_id for w in views if w.state == "idle" and not w.busy)
            stop.update(decision.stop)
            targets[ep] = len([a for a in mine if a.worker_id not in stop]) + decision.start
        return stop, targets

    def _stats(self, ep: str, now: float) -> QueueStats:
        q = self._view.queue(ep)
        normal, low = q.counts()
        oldest = q.oldest_created()
        return QueueStats(
            in_queue=normal,
            in_queue_low_priority=low,
            in_progress=len(self._view.claims_of(ep)),
            oldest_queued_age_s=max(0.0, now - oldest) if oldest else 0.0,
        )

    def _worker_views(self, ep: str, mine: list[WorkerAssignment]) -> list[WorkerView]:
        view = self._view
        busy: dict[str, int] = {}
        for _, claim in view.claims_of(ep):
            busy[claim.worker_id] = busy.get(claim.worker_id, 0) + 1
        present = set(view.presence.get(ep, {})) | set(view.seen.get(ep, {}))
        # A worker's state comes from the host it is placed on only: another node's heartbeat
        # naming it (a compromised host calling every worker "unhealthy") must not stop it.
        reports = {(rec.id, w.worker_id): w for rec, _ in view.nodes.values() for w in rec.workers}
        out = []
        for a in mine:
            rep = reports.get((a.node_id, a.worker_id))
            state = rep.state if rep else "pending"
            if state == "suspended":
                state = "initializing"  # flipped back, noded is resuming it: count it as starting
            elif state == "exited":
                # noded restarts a desired worker that exited (with backoff; crash loops turn
                # "unhealthy"): count it as starting, or every crash would also start a replacement.
                state = "initializing"
            elif state not in ("unhealthy", "stopping") and a.worker_id in present:
                state = "running" if busy.get(a.worker_id) else "idle"
            out.append(
                WorkerView(
                    worker_id=a.worker_id,
                    state=state,
                    busy=busy.get(a.worker_id, 0),
                    restarts=rep.restarts if rep else 0,
                )
            )
        return out

    def _snapshot(
        self, removed: set[str], mig: MigPass, frozen: Sequence[SuspendedWorker] = ()
    ) -> ClusterSnapshot:
        view = self._view
        removed = removed | {s.worker_id for s in frozen}  # suspended: their devices are free capacity
        in_use: dict[str, list[str]] = {}
        cpus: dict[str, float] = {}  # what the assigned workers ask for: their endpoints' current
        memory_mb: dict[str, int] = {}  # cpus / memoryMb, which noded applies (nodes/_desired.py)
        for a in view.assignments.values():
            if a.worker_id not in removed:
                in_use.setdefault(a.node_id, []).extend(a.devices)
                ep = view.endpoints.get(a.endpoint_id)
                if ep is not None:
                    cpus[a.node_id] = cpus.get(a.node_id, 0.0) + ep[0].spec.cpus
                    memory_mb[a.node_id] = memory_mb.get(a.node_id, 0) + ep[0].spec.memory_mb
        for node_id, (rec, _) in view.nodes.items():
            in_use.setdefault(node_id, []).extend(mig.withheld(rec.inventory.gpus))
        by_model = endpoints_by_model({ep: e.spec.model for ep, (e, _) in view.endpoints.items()})
        nodes = [
            NodeSnapshot(
                node_id=node_id,
                inventory=rec.inventory,
                revision=rev,
                draining=rec.draining,
                lost=rec.lost,
                in_use=in_use.get(node_id, []),
                # Endpoints whose weights this host's FlashBoot keeper holds (RAM or disk).
                flashboot_endpoints=sorted({ep for h in rec.inventory.flashboot for ep in h.endpoints}),
                model_endpoints=sorted({ep for m in rec.inventory.models for ep in by_model.get(m, ())}),
                requested_cpus=cpus.get(node_id, 0.0),
                requested_memory_mb=memory_mb.get(node_id, 0),
            )
            for node_id, (rec, rev) in sorted(view.nodes.items())
        ]
        return ClusterSnapshot(nodes=nodes, revision=view.revision)

    async def _apply(
        self, now: float, removed: set[str], placement: PlacementPlan, mig: MigPass, extra: list[Op]
    ) -> None:
        ops: list[Op] = list(mig.ops(placement))  # re-cuts: their workers wait for the new slice
        for worker in sorted(removed):
            a = self._view.assignments.get(worker)
            if a is None:
                continue
            ops.append(Delete(key=nkeys.worker(a.node_id, worker)))
            if a.suspended:
                continue  # its usage was closed when it was suspended
            # Billed until its process exits: UsageCloser (nodes/_metering.py) sets stopped_at.
            unassigned = msgspec.structs.replace(self._usage(a, now, stopped=False), unassigned_at=now)
            ops.append(Put(key=nkeys.usage(worker), value=encode(unassigned)))
        for pa in placement.assignments:
            a = WorkerAssignment(created_at=now, **msgspec.structs.asdict(pa))
            ops.append(Put(key=nkeys.worker(a.node_id, a.worker_id), value=encode(a)))
            ops.append(Put(key=nkeys.usage(a.worker_id), value=encode(self._usage(a, now, stopped=False))))
        ops += extra
        if not ops:
            return
        epoch = await self._store.get(nkeys.EPOCH)
        rev = epoch.mod_revision if epoch else 0
        ops.append(Put(key=nkeys.EPOCH, value=str(now).encode()))
        for i in range(0, len(ops), 100):  # etcd caps ops per txn
            chunk = ops[i : i + 100]
            res = await self._store.txn([Compare(key=nkeys.EPOCH, target="mod", op="==", value=rev)], chunk)
            if not res.succeeded:
                log.info("scheduling epoch moved; re-planning")
                return
            rev = res.revision if chunk[-1].key == nkeys.EPOCH else rev
        log.info(
            "scheduled: +%d workers, -%d workers, %d re-cuts, %d waiting, %d suspend/resume ops",
            len(placement.assignments),
            len(removed),
            len(placement.recuts),
            sum(len(v) for v in placement.unplaced.values()),
            len(extra),
        )

    @staticmethod
    def _usage(a: WorkerAssignment, now: float, *, stopped: bool) -> UsageRecord:
        u = usage_of(a, now, started_at=a.resumed_at or a.created_at)
        return msgspec.structs.replace(u, stopped_at=now) if stopped else u

    async def _save_reasons(self, reasons: dict[str, str]) -> None:
        for ep in set(self._view.reasons) | set(reasons):
            new = reasons.get(ep, "")
            if self._view.reasons.get(ep, "") != new:
                if new:
                    await self._store.put(nkeys.reason(ep), new.encode())
                else:
                    await self._store.delete(nkeys.reason(ep))

    async def _mark_lost(self, now: float) -> None:
        if self._leading_since is not None and now - self._leading_since < self._lost_after:
            # Heartbeats written before we led (or before a coordinator restart) are old by
            # design: judging hosts on them would declare every host lost after an outage.
            return
        for node_id, (rec, rev) in list(self._view.nodes.items()):
            if rec.lost or now - rec.last_heartbeat < self._lost_after:
                continue
            log.warning(
                "node %s lost (no heartbeat for %.0fs); replacing its workers",
                node_id,
                now - rec.last_heartbeat,
            )
            lost = msgspec.structs.replace(rec, lost=True)
            ops: list[Op] = [Put(key=nkeys.node(node_id), value=encode(lost))]
            ops += self._expire_claims_of(node_id, now)
            await self._store.txn([Compare(key=nkeys.node(node_id), target="mod", op="==", value=rev)], ops)

    def _expire_claims_of(self, node_id: str, now: float) -> list[Op]:
        workers = {a.worker_id for a in self._view.assignments_of(node_id)}
        ops: list[Op] = []
        for job_id, (claim, _rev, lease) in self._view.claims.items():
            if claim.worker_id in workers:
                expired = msgspec.structs.replace(claim, deadline=now)
                ops.append(Put(key=keys.claim(job_id), value=encode(expired), lease=lease))
        return ops


def endpoints_by_model(models: dict[str, str]) -> dict[str, list[str]]:
    """Model cache id -> the endpoints that name that model (endpoint id -> model URL in)."""
    out: dict[str, list[str]] = {}
    for ep, url in models.items():
        with contextlib.suppress(InvalidArgument):  # an old stored spec: no preference, no error
            if url:
                out.setdefault(parse_model_ref(url).id, []).append(ep)
    return out
