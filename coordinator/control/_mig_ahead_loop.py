"""Ahead-of-time MIG partitioning, the effects: the leader's demand sampling and re-cuts.

:class:`MigAhead` runs inside the scheduler's pass (coordinator/control/_scheduler.py), rate
limited by itself: at most once a minute it adds what the endpoints demand now to the history
in the store (``/tide/migdemand/``, so a new leader goes on from there), and at most once per
``plan_interval_s`` it plans each region for the hour about to start (from ``lead_s`` before
it) and stores the new layouts of idle cards as MigLayoutRecords with ``source="ahead"``: the
same records the on-demand re-cuts write, which noded applies unchanged.  Each layout write is
guarded by the revisions of the card's stored layout and of its node's record as the plan read
them (captured in :class:`AheadCard` when the cards are read, before the planner's thread), so a
card that changed meanwhile (an on-demand re-cut, an operator's layout, a heartbeat that reports
an instance taken) is skipped and planned again on the next pass.  :meth:`MigAhead.tick` answers
the layouts it wrote that the view does not show yet, so the scheduling pass it rides on treats
them as stored (withholds the instances they may destroy).  :meth:`MigAhead.report` is the same
plan as a read-only report (``GET /admin/v1/mig/forecast``, ``tide mig forecast``).

The coordinator config's ``[mig]`` section is :class:`AheadSettings`; with ``ahead-enabled =
false`` the leader neither samples nor re-cuts ahead of time, and the report still shows the
forecast from the history stored so far, with no re-cuts and a reason that says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping

import msgspec

from coordinator._node_schema import MigDemandRecord, MigLayoutRecord, nkeys
from coordinator._schema import encode
from coordinator.scheduling import (
    DEFAULT_AHEAD,
    SAMPLE_INTERVAL_S,
    AheadCard,
    AheadPlan,
    AheadSettings,
    CardTarget,
    Forecast,
    bucket_label,
    buckets_of,
    compute_demand,
    forecast_for,
    plan_ahead,
    update_demand,
    window_hour,
)
from coordinator.store import Compare, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import TideError

__all__ = ["MigAhead", "RegionForecast", "UpcomingHour"]

log = logging.getLogger("tide.coordinator.mig_ahead")
_record_decoder = msgspec.json.Decoder(MigDemandRecord)
History = dict[tuple[str, str], MigDemandRecord]  # (region, bucket) -> record
OFF_REASON = "ahead-of-time re-cuts are off (coordinator config: [mig] ahead-enabled = false)"


def _decode(raw: bytes) -> MigDemandRecord | None:
    try:
        return _record_decoder.decode(raw)
    except msgspec.DecodeError:
        log.warning("undecodable MIG demand record; it is started again")
        return None


class UpcomingHour(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    hour: int
    label: str
    basis: str
    slices: float  # forecast MIG slices, all profiles
    whole_gpus: float  # forecast whole GPUs


class RegionForecast(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One region in the forecast report."""

    region: str
    hour: int  # the unix hour planned for
    label: str  # "Tue 09:00 UTC"
    basis: str  # hour-of-week | hour-of-day | none
    occurrences: int
    forecast: dict[str, float]  # demand key -> expected concurrent devices
    plan: AheadPlan | None  # None: no forecast yet
    whole_gpus: dict[str, int]  # non-MIG cards of the region by type (whole-GPU capacity)
    upcoming: list[UpcomingHour]  # the hour planned for and those after it


class MigAhead:
    """See the module docstring.  One per scheduler; ``tick`` is called from its pass.

    ``clock`` (tests) overrides the pass's ``now``.  ``tick`` never raises (it logs what fails,
    and after an unexpected error waits its intervals before trying again): it is best-effort,
    and the scheduling pass it rides on must go on.
    """

    def __init__(
        self,
        store: Store,
        view: ClusterView,
        *,
        settings: AheadSettings = DEFAULT_AHEAD,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._view = view
        self.settings = settings
        self._clock = clock
        self._sampled = -math.inf
        self._planned = -math.inf
        self.last: dict[str, AheadPlan] = {}  # region -> the last pass's plan
        self._unseen: dict[str, tuple[MigLayoutRecord, int]] = {}  # gpu uuid -> (written, its revision)

    async def tick(self, now: float, targets: Mapping[str, int]) -> dict[str, MigLayoutRecord]:
        """Sample and re-cut if their intervals are up.  ``targets``: the autoscaler's wanted
        worker count per endpoint (those not placed yet count as demand too).

        Answers :meth:`written`: the caller's placement must treat those layouts as stored, or it
        could hand out an idle instance the new layout destroys (noded would then block the cut).
        """
        if not self.settings.enabled:
            return self.written()
        now = self._clock() if self._clock is not None else now
        try:
            if now - self._sampled >= SAMPLE_INTERVAL_S:
                await self.sample(now, targets)
                self._sampled = now
            if now - self._planned >= self.settings.plan_interval_s:
                await self.recut(now)
                self._planned = now
        except TideError as exc:
            log.warning("ahead-of-time MIG pass failed: %s", exc.message)
        except Exception:
            # A bug: it would recur on every pass (20 a second at most), so wait the intervals.
            log.exception("ahead-of-time MIG pass failed; placement goes on without it")
            self._sampled = self._planned = now
        return self.written()

    def written(self) -> dict[str, MigLayoutRecord]:
        """The layouts :meth:`recut` stored that the view does not show yet, by GPU uuid."""
        seen = self._view.revision
        self._unseen = {gpu: (rec, rev) for gpu, (rec, rev) in self._unseen.items() if rev > seen}
        return {gpu: rec for gpu, (rec, _) in self._unseen.items()}

    async def sample(self, now: float, targets: Mapping[str, int]) -> None:
        """Add the demand of ``now`` to the history (one guarded write per region and bucket)."""
        view = self._view
        assigned = Counter(a.endpoint_id for a in view.assignments.values())
        waiting = [
            (endpoint.spec, max(0, targets.get(ep, 0) - assigned[ep]))
            for ep, (endpoint, _) in view.endpoints.items()
        ]
        demand = compute_demand([rec for rec, _ in view.nodes.values()], view.assignments.values(), waiting)
        for region, sample in demand.items():
            for bucket in buckets_of(int(now // 3600)):
                await self._add(region, bucket, sample, now)

    async def _add(self, region: str, bucket: str, sample: dict[str, float], now: float) -> None:
        key = nkeys.mig_demand(region, bucket)
        kv = await self._store.get(key)
        old = _decode(kv.value) if kv is not None else None  # undecodable: start the bucket again
        demand = self.settings.demand
        new = update_demand(
            old,
            region=region,
            bucket=bucket,
            sample=sample,
            now=now,
            alpha=demand.alpha_of(bucket),
            max_cells=demand.max_keys,
        )
        if new != old:  # a lost race means another leader sampled this minute: nothing to redo
            guard = Compare(key=key, target="mod", op="==", value=kv.mod_revision if kv else 0)
            await self._store.txn([guard], [Put(key=key, value=encode(new))])

    async def history(self) -> History:
        res = await self._store.range(nkeys.MIGDEMAND)
        out: History = {}
        for kv in res.kvs:
            if (rec := _decode(kv.value)) is not None:
                out[(rec.region, rec.bucket)] = rec
        return out

    def regions(self) -> list[str]:
        return sorted({rec.inventory.region for rec, _ in self._view.nodes.values() if not rec.lost})

    def cards(self, region: str) -> list[AheadCard]:
        """The region's MIG-enabled cards on live nodes, with what the plan needs to know."""
        view = self._view
        out = []
        for node_id, (rec, node_rev) in sorted(view.nodes.items()):
            if rec.lost or rec.inventory.region != region:
                continue
            in_use = frozenset(d for a in view.assignments_of(node_id) for d in a.devices)
            layouts = view.mig_layouts.get(node_id, {})
            for gpu in rec.inventory.gpus:
                if gpu.mig_enabled:
                    stored = layouts.get(gpu.uuid)
                    out.append(
                        AheadCard(
                            node_id=node_id,
                            gpu=gpu,
                            in_use=in_use,
                            record=stored[0] if stored else None,
                            error=rec.inventory.mig_errors.get(gpu.uuid, ""),
                            draining=rec.draining,
                            layout_revision=stored[1] if stored else 0,
                            node_revision=node_rev,
                        )
                    )
        return out

    def forecast(self, history: History, region: str, hour: int) -> Forecast:
        week, day = buckets_of(hour)
        week_rec, day_rec = history.get((region, week)), history.get((region, day))
        return forecast_for(hour, week_rec, day_rec, self.settings.demand)

    async def plan(
        self, history: History, region: str, now: float
    ) -> tuple[Forecast, AheadPlan | None, list[AheadCard]]:
        """The region's forecast for the hour to prepare at ``now``, its plan (None: no forecast
        yet) and the cards it was planned from.  The planner runs in a thread (a large region
        takes a few hundred ms) while the view goes on applying events: hence the revisions the
        cards carry."""
        fc = self.forecast(history, region, window_hour(now, self.settings.lead_s))
        if fc.basis == "none":
            return fc, None, []
        cards = self.cards(region)
        plan = await asyncio.to_thread(
            plan_ahead, forecast=fc.demand, cards=cards, now=now, settings=self.settings
        )
        return fc, plan, cards

    async def recut(self, now: float) -> None:
        """Plan every region for the coming hour and store the new layouts."""
        history = await self.history()
        for region in self.regions():
            fc, plan, cards = await self.plan(history, region, now)
            if plan is None:
                continue
            self.last[region] = plan
            read = {(c.node_id, c.gpu.uuid): c for c in cards}
            for target in plan.targets:
                card = read[target.node_id, target.gpu_uuid]
                await self._write(target, card, now, f"forecast for {region} {bucket_label(fc.hour)}")

    async def _write(self, t: CardTarget, card: AheadCard, now: float, why: str) -> None:
        """Store ``t``'s layout if neither the card's layout nor its node's record changed since
        ``card`` was read for the plan (a node gone since fails the guard too)."""
        gains = ", ".join(f"{n} x {k.partition(':')[2]}" for k, n in t.gains.items())
        record = MigLayoutRecord(
            node_id=t.node_id,
            gpu_uuid=t.gpu_uuid,
            profiles=t.profiles,
            written_at=now,
            source="ahead",
            reason=f"{why}: {gains}",
        )
        key = nkeys.mig_layout(t.node_id, t.gpu_uuid)
        guards = [
            Compare(key=key, target="mod", op="==", value=card.layout_revision),
            Compare(key=nkeys.node(t.node_id), target="mod", op="==", value=card.node_revision),
        ]
        res = await self._store.txn(guards, [Put(key=key, value=encode(record))])
        if not res.succeeded:
            log.info("MIG %s on %s changed since it was planned; planned again later", t.gpu_uuid, t.node_id)
            return
        self._unseen[t.gpu_uuid] = (record, res.revision)
        log.info(
            "MIG %s on %s re-cut ahead of time to %s (%s)",
            t.gpu_uuid,
            t.node_id,
            t.profiles,
            record.reason,
        )

    async def report(self, now: float, hours: int = 24) -> list[RegionForecast]:
        """What :meth:`recut` would do at ``now``, per region, and the forecast of the next
        ``hours`` hours.  Read-only; any replica can answer it.  Off (``enabled`` false): the
        plan's counts, but no re-cuts and :data:`OFF_REASON`."""
        history = await self.history()
        out = []
        for region in self.regions():
            fc, plan, _ = await self.plan(history, region, now)
            if plan is not None and not self.settings.enabled:
                plan = msgspec.structs.replace(plan, targets=[], skipped={}, reason=OFF_REASON)
            upcoming = [self._summary(self.forecast(history, region, fc.hour + i)) for i in range(hours)]
            out.append(
                RegionForecast(
                    region=region,
                    hour=fc.hour,
                    label=bucket_label(fc.hour),
                    basis=fc.basis,
                    occurrences=fc.occurrences,
                    forecast={k: round(v, 3) for k, v in fc.demand.items()},
                    plan=plan,
                    whole_gpus=self._whole(region),
                    upcoming=upcoming,
                )
            )
        return out

    @staticmethod
    def _summary(fc: Forecast) -> UpcomingHour:
        slices = sum(v for k, v in fc.demand.items() if ":" in k)
        whole = sum(v for k, v in fc.demand.items() if ":" not in k)
        label = bucket_label(fc.hour)
        return UpcomingHour(
            hour=fc.hour, label=label, basis=fc.basis, slices=round(slices, 2), whole_gpus=round(whole, 2)
        )

    def _whole(self, region: str) -> dict[str, int]:
        count: Counter[str] = Counter()
        for rec, _ in self._view.nodes.values():
            if not rec.lost and rec.inventory.region == region:
                count.update(g.type_id for g in rec.inventory.gpus if not g.mig_enabled)
        return dict(sorted(count.items()))
