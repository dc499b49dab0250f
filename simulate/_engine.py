"""The discrete-event loop: a virtual clock, the trace's arrivals, and the leader's pass.

Events are arrivals (read from the trace in order, replayed ``warmup_days`` times before the
measured day so the demand history has days to learn from), job completions, workers becoming
ready (after the stage model's cold start), and MIG layouts applied by noded (``recut_s`` after
they are stored).  Every ``tick_s`` the leader's pass runs, as ``coordinator/control``'s
``Scheduler.tick`` does: autoscale each endpoint (``compute_desired_workers``), the ahead-of-time
MIG pass (dynamic policy), ``plan_reconcile``, ``plan_placement`` with the ``MigSliceFitter``,
then apply.  Jobs are taken by a ready worker of their endpoint the moment one has a free slot
(a worker's long-poll ``job-take``).  No sleeps, no threads: a day runs as fast as the planners.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

from coordinator.scheduling import (
    NO_RECUT,
    AheadSettings,
    Assignment,
    ClusterSnapshot,
    CurrentWorker,
    MigLayoutRecord,
    MigSliceFitter,
    PlacementPlan,
    PlacementRequest,
    QueueStats,
    WorkerAssignment,
    WorkerView,
    catalog_of,
    compute_desired_workers,
    plan_placement,
    plan_reconcile,
    slice_share,
)
from simulate._ahead import Ahead
from simulate._cluster import Card, Cluster, Endpoint, Worker
from simulate._inputs import Trace
from simulate._layouts import cut
from simulate._stages import StageModel

__all__ = ["Engine"]

_DONE, _READY, _RECUT = 0, 1, 2
_QUIET_S = 60.0  # an endpoint with no load and no workers this long needs no autoscaler tick


class Engine:
    def __init__(
        self,
        cluster: Cluster,
        trace: Trace,
        endpoint_ids: list[str],
        *,
        stages: StageModel,
        ahead: AheadSettings | None,
        recut_interval_s: float,
        dynamic: bool,
        tick_s: float,
        days: int,
        period: float,
        epoch: float,
    ) -> None:
        self.cl = cluster
        self.trace = trace
        self.ep_of = [cluster.endpoints[e] for e in endpoint_ids]  # trace endpoint index -> state
        self.stages = stages
        self.ahead = Ahead(cluster, ahead) if ahead is not None and ahead.enabled else None
        self.recut_interval_s = recut_interval_s
        self.dynamic = dynamic
        self.tick_s = tick_s
        self.days = days
        self.period = period
        self.epoch = epoch
        self.events: list[tuple[float, int, int, Any]] = []  # (time, seq, kind, payload)
        self.seq = itertools.count()
        self.ids = (f"w{i}" for i in itertools.count())
        self.serial = 0  # new MIG instance uuids
        self.submitted = self.started = self.completed = 0
        self.recuts = 0

    # -- the loop -------------------------------------------------------------------------

    def run(self, drain_s: float) -> float:
        """Run to the end of the measured day and drain (at most ``drain_s``); the end time."""
        arrivals = self._arrivals()
        nxt = next(arrivals, None)
        tick = self.epoch
        horizon = self.epoch + self.days * self.period
        while True:
            t_ev = self.events[0][0] if self.events else float("inf")
            t_arr = nxt[0] if nxt is not None else float("inf")
            if nxt is None and not self.events and not self._busy():
                return max(tick, horizon)
            if tick > horizon + drain_s:
                return tick
            if tick <= t_ev and tick <= t_arr:
                self.pass_(tick)
                tick = self._next_tick(tick, min(t_ev, t_arr))
            elif t_arr <= t_ev:
                assert nxt is not None
                self._arrive(*nxt)
                nxt = next(arrivals, None)
            else:
                _, _, kind, obj = heapq.heappop(self.events)
                self._event(t_ev, kind, obj)

    def _busy(self) -> bool:
        return any(ep.queue or ep.workers for ep in self.cl.endpoints.values())

    def _next_tick(self, tick: float, upcoming: float) -> float:
        """The next pass: ``tick_s`` on while anything is going on; else at the next event."""
        nxt = tick + self.tick_s
        if self._busy() or any(nxt - ep.last_active < _QUIET_S for ep in self.cl.endpoints.values()):
            return nxt
        if upcoming == float("inf"):
            return nxt
        steps = max(1, int((upcoming - tick) // self.tick_s))
        return tick + steps * self.tick_s

    def _arrivals(self) -> Iterator[tuple[float, int, float, bool]]:
        tr = self.trace
        for day in range(self.days):
            base = self.epoch + day * self.period
            measured = day == self.days - 1
            for t, e, s in zip(tr.t, tr.endpoint, tr.service_s, strict=True):
                yield base + t, e, s, measured

    def _push(self, t: float, kind: int, obj: Any) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, obj))

    # -- jobs and workers -----------------------------------------------------------------

    def _arrive(self, t: float, e: int, service_s: float, measured: bool) -> None:
        ep = self.ep_of[e]
        ep.queue.append((t, service_s, measured))
        ep.last_active = t
        if measured:
            self.submitted += 1
            self.cl.meter.count(t, self.cl.meter.jobs)
        self._dispatch(ep, t)

    def _dispatch(self, ep: Endpoint, now: float) -> None:
        per = ep.spec.concurrency_per_worker
        while ep.queue and ep.free:
            w = next(reversed(ep.free.values()))  # the most recently freed worker takes it
            arrived, service_s, measured = ep.queue.popleft()
            w.busy += 1
            ep.in_progress += 1
            if w.busy >= per:
                del ep.free[w.worker_id]
            if measured:
                self.started += 1
                self.cl.meter.delay(arrived, now)
            self._push(now + service_s, _DONE, (w, measured))

    def _event(self, now: float, kind: int, obj: Any) -> None:
        if kind == _DONE:
            self._done(obj[0], obj[1], now)
        elif kind == _READY:
            assert isinstance(obj, Worker)
            if obj.alive:
                obj.ready = True
                obj.idle_since = now
                obj.ep.free[obj.worker_id] = obj
                self._dispatch(obj.ep, now)
        else:
            self._apply_layout(obj[0], obj[1])

    def _done(self, w: Worker, measured: bool, now: float) -> None:
        ep = w.ep
        w.busy -= 1
        ep.in_progress -= 1
        ep.last_active = now
        if measured:
            self.completed += 1
        if w.alive:
            if w.busy == 0:
                w.idle_since = now
            ep.free[w.worker_id] = w
            self._dispatch(ep, now)

    # -- the leader's pass ----------------------------------------------------------------

    def pass_(self, now: float) -> None:
        stop, targets, changed = self._autoscale(now)
        written = self.ahead.tick(now, targets) if self.ahead is not None else []
        for card, rec in written:
            self._store_layout(card, rec, now)
        if not changed:
            return
        current = [
            CurrentWorker(worker_id=w.worker_id, endpoint_id=ep)
            for ep in changed
            for w in self.cl.endpoints[ep].workers.values()
        ]
        plan = plan_reconcile(
            current=current, desired={ep: targets[ep] for ep in changed}, new_ids=self.ids, stop=stop
        )
        for wid in plan.remove:
            self._remove(wid, now)
        if plan.add:
            self._place(plan.add, now)

    def _autoscale(self, now: float) -> tuple[set[str], dict[str, int], list[str]]:
        stop: set[str] = set()
        targets: dict[str, int] = {}
        changed: list[str] = []
        for ep_id, ep in self.cl.endpoints.items():
            if not ep.queue and not ep.workers and now - ep.last_active >= _QUIET_S:
                continue
            if ep.queue or ep.workers or ep.in_progress:
                ep.last_active = now
            oldest = now - ep.queue[0][0] if ep.queue else 0.0
            stats = QueueStats(in_queue=len(ep.queue), in_progress=ep.in_progress, oldest_queued_age_s=oldest)
            views = [self._view(w) for w in ep.workers.values()]
            d = compute_desired_workers(ep.spec, stats, views, ep.scaler, now)
            ep.scaler = d.state
            stop.update(d.stop)
            targets[ep_id] = len(ep.workers) - len(d.stop) + d.start
            if d.stop or d.start:
                changed.append(ep_id)
        return stop, targets, changed

    @staticmethod
    def _view(w: Worker) -> WorkerView:
        if not w.ready:
            return WorkerView(worker_id=w.worker_id, state="initializing")
        if w.busy:
            return WorkerView(worker_id=w.worker_id, state="running", busy=w.busy)
        return WorkerView(worker_id=w.worker_id, state="idle", idle_since=w.idle_since)

    def _remove(self, wid: str, now: float) -> None:
        for ep in self.cl.endpoints.values():
            w = ep.workers.pop(wid, None)
            if w is None:
                continue
            w.alive = False
            ep.free.pop(wid, None)
            for uuid in w.assignment.devices:
                self.cl.in_use[w.host.node_id].discard(uuid)
            for card in w.cards:
                self.cl.release(card, now)
            self.cl.meter.interval(w.created, now, w.share, self.cl.meter.slice_h)
            w.host.holds[ep.id] = now
            return

    def _place(self, add: dict[str, list[str]], now: float) -> None:
        cl = self.cl
        requests = [
            PlacementRequest(endpoint_id=ep, spec=cl.endpoints[ep].spec, worker_ids=ids)
            for ep, ids in sorted(add.items())
        ]
        dcs = {dc for r in requests for dc in r.spec.data_center_ids}
        hosts = [h for h in cl.hosts if h.datacenter in dcs]
        layouts = {c.uuid: c.record for h in hosts for c in h.cards if c.record is not None}
        fitter = MigSliceFitter(layouts=layouts, errors={}, now=now, min_interval_s=self.recut_interval_s)
        snapshot = ClusterSnapshot(nodes=cl.snapshot_nodes(hosts, now))
        plan = plan_placement(snapshot, requests, slice_fitter=fitter if self.dynamic else NO_RECUT)
        self._apply(plan, fitter, now)

    def _apply(self, plan: PlacementPlan, fitter: MigSliceFitter, now: float) -> None:
        for r in plan.recuts:
            profiles = fitter.proposals.get(r.gpu_uuid)
            card = self.cl.cards[r.gpu_uuid]
            old = card.record
            if profiles is None or (old is not None and Counter(old.profiles) == Counter(profiles)):
                continue
            rec = MigLayoutRecord(
                node_id=r.node_id, gpu_uuid=r.gpu_uuid, profiles=sorted(profiles), written_at=now
            )
            self._store_layout(card, rec, now)
        for a in plan.assignments:
            self._start(a, now)

    def _start(self, pa: Assignment, now: float) -> None:
        cl = self.cl
        host = cl.by_id[pa.node_id]
        ep = cl.endpoints[pa.endpoint_id]
        if pa.mig_profile:
            cards = [cl.instance_card[pa.devices[0]]]
            share = slice_share(pa.gpu_type, pa.mig_profile)
        else:
            cards = [cl.cards[u] for u in pa.devices]
            share = float(len(cards))
        a = WorkerAssignment(
            worker_id=pa.worker_id,
            endpoint_id=pa.endpoint_id,
            node_id=pa.node_id,
            gpu_type=pa.gpu_type,
            devices=pa.devices,
            mig_profile=pa.mig_profile,
            price_key=pa.price_key,
            created_at=now,
        )
        w = Worker(pa.worker_id, ep, host, cards, share, a)
        ep.workers[w.worker_id] = w
        cl.in_use[host.node_id].update(pa.devices)
        for card in cards:
            cl.hold(card, now)
        cl.meter.count(now, cl.meter.cold_starts)
        self._push(now + self.stages.cold_start_s(self._tier(host.holds, ep.id, now)), _READY, w)

    def _tier(self, holds: dict[str, float], ep_id: str, now: float) -> str:
        last = holds.get(ep_id)
        if last is None:
            return "source"
        return "t1" if now - last <= self.stages.t1_keep_s else "t2"

    # -- MIG layouts ----------------------------------------------------------------------

    def _store_layout(self, card: Card, rec: MigLayoutRecord, now: float) -> None:
        card.record = rec
        card.ahead = None
        card.host.changed()
        self.recuts += 1
        self.cl.meter.count(now, self.cl.meter.recuts)
        self._push(now + self.stages.recut_s, _RECUT, (card, rec))

    def _apply_layout(self, card: Card, rec: MigLayoutRecord) -> None:
        """noded applies the stored layout: busy and assigned instances stay where they are."""
        if card.record is not rec:
            return  # superseded by a newer layout; that one's event applies it
        catalog = catalog_of(card.type_id)
        assert catalog is not None
        used = self.cl.in_use[card.host.node_id]
        keep = [i for i in card.instances if i.uuid in used]
        done = cut(catalog, card.instances, list(rec.profiles), keep, f"MIG-{card.uuid}", self.serial)
        if done is None:
            card.record = None  # noded would report the error; the card goes back to unmanaged
            card.host.changed()
            return
        self.cl.set_instances(card, done[0])
        self.serial = done[1]
