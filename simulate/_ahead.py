"""Ahead-of-time MIG re-cuts in the simulation: what the leader's ``MigAhead`` does, on the
simulated clock.  Demand samples (once a minute) go into an in-memory history through the real
``compute_demand`` / ``update_demand``; every ``plan_interval_s`` each region is planned for
the coming hour with ``forecast_for`` and ``plan_ahead``; the targets come back as layouts to
store (``source="ahead"``), exactly the records the leader writes."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from coordinator.scheduling import (
    SAMPLE_INTERVAL_S,
    AheadCard,
    AheadSettings,
    MigDemandRecord,
    MigLayoutRecord,
    buckets_of,
    compute_demand,
    forecast_for,
    plan_ahead,
    update_demand,
    window_hour,
)
from simulate._cluster import Card, Cluster

__all__ = ["Ahead"]


class Ahead:
    def __init__(self, cluster: Cluster, settings: AheadSettings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.history: dict[tuple[str, str], MigDemandRecord] = {}
        self._sampled = -math.inf
        self._planned = -math.inf
        self.regions = sorted({h.region for h in cluster.hosts})
        self._cards = {
            r: [c for h in cluster.hosts if h.region == r for c in h.cards if c.mig] for r in self.regions
        }

    def tick(self, now: float, targets: Mapping[str, int]) -> list[tuple[Card, MigLayoutRecord]]:
        if now - self._sampled >= SAMPLE_INTERVAL_S:
            self._sample(now, targets)
            self._sampled = now
        if now - self._planned >= self.settings.plan_interval_s:
            self._planned = now
            return [w for r in self.regions for w in self._plan(r, now)]
        return []

    def _sample(self, now: float, targets: Mapping[str, int]) -> None:
        cl = self.cluster
        assignments = [w.assignment for ep in cl.endpoints.values() for w in ep.workers.values()]
        assigned = Counter(a.endpoint_id for a in assignments)
        waiting = [
            (cl.endpoints[ep].spec, max(0, n - assigned[ep])) for ep, n in targets.items() if n > assigned[ep]
        ]
        demand = compute_demand([h.node_record() for h in cl.hosts], assignments, waiting)
        d = self.settings.demand
        for region, sample in demand.items():
            for bucket in buckets_of(int(now // 3600)):
                old = self.history.get((region, bucket))
                self.history[(region, bucket)] = update_demand(
                    old,
                    region=region,
                    bucket=bucket,
                    sample=sample,
                    now=now,
                    alpha=d.alpha_of(bucket),
                    max_cells=d.max_keys,
                )

    def _plan(self, region: str, now: float) -> list[tuple[Card, MigLayoutRecord]]:
        hour = window_hour(now, self.settings.lead_s)
        week, day = buckets_of(hour)
        fc = forecast_for(
            hour, self.history.get((region, week)), self.history.get((region, day)), self.settings.demand
        )
        if fc.basis == "none":
            return []
        cards = self._cards[region]
        plan = plan_ahead(
            forecast=fc.demand, cards=[self._view(c) for c in cards], now=now, settings=self.settings
        )
        by_uuid = {c.uuid: c for c in cards}
        out = []
        for t in plan.targets:
            rec = MigLayoutRecord(
                node_id=t.node_id, gpu_uuid=t.gpu_uuid, profiles=t.profiles, written_at=now, source="ahead"
            )
            out.append((by_uuid[t.gpu_uuid], rec))
        return out

    def _view(self, card: Card) -> AheadCard:
        if card.ahead is None:
            used = self.cluster.in_use[card.host.node_id]
            in_use = frozenset(i.uuid for i in card.instances if i.uuid in used)
            card.ahead = AheadCard(
                node_id=card.host.node_id,
                gpu=card.host.inventory().gpus[card.index],
                in_use=in_use,
                record=card.record,
            )
        return card.ahead
