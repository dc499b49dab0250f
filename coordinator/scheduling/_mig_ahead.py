"""Ahead-of-time MIG partitioning, the pure half: re-cut idle cards toward a region's forecast.

:func:`plan_ahead` takes the forecast of one region for the coming hour (devices per demand
key, from coordinator/scheduling/_mig_demand.py), the region's MIG-pool cards and the time, and
answers with new layouts for some idle cards.  Rules:

* It acts only on a *deficit*: forecast slices the region's cards do not hold (counting the
  layouts being applied).  Slices nobody forecasts are destroyed only to make room for a
  deficit, never for their own sake: fewer re-cuts, and on-demand partitioning still covers
  surprises.  Whole-GPU demand is reported, not planned: MIG-pool cards stay MIG-enabled.
* Hysteresis: nothing happens unless the deficit is at least ``min_deficit_cards`` and
  ``deficit_fraction`` of the region's MIG cards (in card-equivalents: a 1g.10gb is 1/8 of an
  H100); a card is re-cut ahead of time at most once per ``card_interval_s`` (counting any
  re-cut), and at most ``max_cards`` cards per region per pass.
* Safety: an instance a worker is assigned to or that noded saw busy stays where it is
  (mig.plan_layout keeps it, and mig.plan_transition is checked); cards with an operator's
  layout (``tide mig apply``), a re-cut still being applied, or an error are left alone.
* Churn: each card is filled greedily (largest missing slices first, then idle slices nobody
  forecasts kept where they still fit); cards are chosen greedily by slices gained per idle
  instance destroyed, so an empty card or one already close to the forecast goes first.

The knobs are :class:`AheadSettings`, the coordinator config's ``[mig] ahead-*`` keys (the
defaults are the figures in its fields).  The layouts it returns are profile multisets, stored
as MigLayoutRecords exactly like the on-demand re-cuts, so noded applies them unchanged (its own
mig.plan_layout call on the same instances yields the same placements).  Pure and deterministic.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec

from coordinator._node_schema import MigLayoutRecord
from coordinator.scheduling._mig_demand import DEFAULT_DEMAND, DemandSettings
from coordinator.scheduling._mig_fit import card_state, catalog_of
from mig import Catalog, Layout, Slot, Transition, plan_layout, plan_transition
from tide.api.gpu_types import canonical_gpu_type
from tide.api.nodes import GpuInfo

__all__ = [
    "DEFAULT_AHEAD",
    "AheadCard",
    "AheadPlan",
    "AheadSettings",
    "CardTarget",
    "plan_ahead",
    "window_hour",
]


class AheadSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs of ahead-of-time partitioning (the coordinator config's ``[mig]`` section).

    ``enabled`` and ``demand`` are for the leader's loop (coordinator/control/_mig_ahead_loop.py):
    when off, it neither samples demand nor re-cuts ahead of time.  The planner reads the rest.
    """

    enabled: bool = True
    lead_s: float = 600.0  # plan for the next hour this long before it starts
    card_interval_s: float = 1800.0  # one ahead-of-time re-cut per card per this long
    plan_interval_s: float = 60.0  # the leader plans at most this often
    min_deficit_cards: float = 0.125  # act on at least one H100 1g slice missing ...
    deficit_fraction: float = 0.05  # ... and at least this share of the region's MIG cards
    max_cards: int = 4  # cards re-cut per region per pass
    round_slack: float = 0.25  # 1.25 forecast slices -> 1, 1.3 -> 2
    demand: DemandSettings = DEFAULT_DEMAND  # how demand is learnt and forecast


DEFAULT_AHEAD = AheadSettings()


class AheadCard(msgspec.Struct, frozen=True, kw_only=True):
    """One MIG-pool card of the region, as the leader sees it."""

    node_id: str
    gpu: GpuInfo
    in_use: frozenset[str] = frozenset()  # MIG uuids workers are assigned to
    record: MigLayoutRecord | None = None  # its stored layout
    error: str = ""  # what noded reports about applying it
    draining: bool = False  # its node drains: leave it alone
    # The mod revisions of its stored layout (0: none) and of its node's record as read for the
    # plan: the leader's layout write is guarded by these, not by what it reads when it writes.
    layout_revision: int = 0
    node_revision: int = 0


class CardTarget(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    node_id: str
    gpu_uuid: str
    type_id: str
    profiles: list[str]  # the new layout (a multiset, sorted)
    destroy: list[Slot]  # idle instances only
    create: list[Slot]
    gains: dict[str, int]  # demand keys this cut adds


class AheadPlan(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One region's pass: what it wanted, had and lacked, and the cards it re-cuts."""

    wanted: dict[str, int] = {}  # forecast slices, rounded
    capacity: dict[str, int] = {}  # slices the region's MIG cards hold (or are being cut to)
    deficit: dict[str, int] = {}  # wanted but not held (card types the region has)
    surplus: dict[str, int] = {}  # held but not wanted (destroyable when idle)
    deficit_cards: float = 0.0  # the deficit in card-equivalents
    threshold_cards: float = 0.0  # act only at or above this
    targets: list[CardTarget] = []
    skipped: dict[str, str] = {}  # gpu uuid -> why it may not be re-cut now
    reason: str = ""  # why nothing (more) was done


def window_hour(now: float, lead_s: float) -> int:
    """The unix hour to prepare for at ``now``: the next one from ``lead_s`` before it starts."""
    return int((now + lead_s) // 3600)


def _key(type_id: str, profile: str) -> str:
    return f"{type_id}:{profile}"


def _share(catalog: Catalog, profile: str) -> float:
    p = catalog.profile(profile)
    return max(p.size / catalog.grid, p.compute_slices / catalog.compute_slices)


def _held(gpu: GpuInfo, in_use: frozenset[str]) -> list[Slot]:
    return [Slot(profile=i.profile, start=i.start) for i in gpu.mig_instances if i.busy or i.uuid in in_use]


def _holds(card: AheadCard) -> list[str]:
    """The profiles a card holds, or is being cut to (a pending layout)."""
    state = card_state(card.gpu, card.record, card.error)
    if state == "pending" and card.record is not None:
        return list(card.record.profiles)
    return [i.profile for i in card.gpu.mig_instances]


def _why_not(card: AheadCard, now: float, settings: AheadSettings) -> str | None:
    """Why a card may not be re-cut ahead of time now; None if it may."""
    rec = card.record
    if card.draining:
        return "its node is draining"
    if rec is not None and rec.source == "admin":
        return "an operator's layout (tide mig release frees it)"
    state = card_state(card.gpu, rec, card.error)
    if state in ("pending", "failed"):
        return f"its last re-cut is {state}" + (f": {card.error}" if card.error else "")
    if rec is not None and (age := now - rec.written_at) < settings.card_interval_s:
        when = f"{int(age)} s ago" if age >= 0 else "after that time"  # a report about the past
        return f"re-cut {when} (at most once per {int(settings.card_interval_s)} s)"
    return None


class _Fill(msgspec.Struct, frozen=True, kw_only=True):
    layout: Layout
    step: Transition
    gains: dict[str, int]  # profile -> instances added for the deficit
    gained: float  # in card-equivalents


def _fits(catalog: Catalog, gpu: GpuInfo, wanted: list[str], held: list[Slot]) -> Layout | None:
    """mig.plan_layout for ``wanted`` keeping ``held`` (and instances marked busy), or None."""
    instances = tuple(sorted(Slot(profile=i.profile, start=i.start) for i in gpu.mig_instances))
    busy = {Slot(profile=i.profile, start=i.start) for i in gpu.mig_instances if i.busy}
    return _layout(catalog.type_id, instances, tuple(sorted(wanted)), tuple(sorted(busy | set(held))))


@functools.lru_cache(maxsize=8192)
def _layout(
    type_id: str, instances: tuple[Slot, ...], wanted: tuple[str, ...], busy: tuple[Slot, ...]
) -> Layout | None:
    # Memoised: a pass evaluates the same card shapes again after each card it picks, and
    # fleets hold many identical cards.  Pure, so a cache cannot change an answer.
    catalog = catalog_of(type_id)
    assert catalog is not None
    layout = plan_layout(catalog, instances, wanted, busy=busy)
    return layout if isinstance(layout, Layout) else None


def _fill_card(
    catalog: Catalog, gpu: GpuInfo, held: list[Slot], deficit: Counter[str], budget: Counter[str]
) -> _Fill | None:
    """The most deficit this card can take (profiles -> counts), destroying idle instances only
    of profiles in ``budget`` (the region's surplus), and keeping what still fits in place."""
    idle = Counter(i.profile for i in gpu.mig_instances) - Counter(s.profile for s in held)
    optional = Counter({p: min(n, budget[p]) for p, n in idle.items() if budget[p] > 0})
    wanted = [s.profile for s in held] + sorted((idle - optional).elements())
    room = catalog.grid - sum(catalog.profile(p).size for p in wanted)
    if all(catalog.profile(p).size > room for p in deficit):
        return None  # cheap and common on a busy fleet: nothing missing fits the room left
    added: list[str] = []
    by_size = sorted(deficit, key=lambda p: (-catalog.profile(p).size, p))
    for profile in by_size:
        for _ in range(deficit[profile]):
            if _fits(catalog, gpu, [*wanted, *added, profile], held) is None:
                break  # one more of this profile cannot fit: neither can two
            added.append(profile)
    if not added:
        return None
    wanted += added
    for profile in sorted(optional.elements(), key=lambda p: (-catalog.profile(p).size, p)):
        if _fits(catalog, gpu, [*wanted, profile], held) is not None:
            wanted.append(profile)
    layout = _fits(catalog, gpu, wanted, held)
    step = plan_transition(gpu.mig_instances, layout, busy=held) if layout is not None else None
    if layout is None or not isinstance(step, Transition):
        return None  # cannot happen: plan_layout keeps every held instance
    gains = Counter(added)
    gained = sum(_share(catalog, p) * n for p, n in gains.items())
    return _Fill(layout=layout, step=step, gains=dict(gains), gained=gained)


class _Region:
    """The counts one pass works down: deficit and destroyable surplus per demand key."""

    def __init__(self, wanted: Mapping[str, int], cards: Sequence[AheadCard]) -> None:
        self.catalogs: dict[str, Catalog] = {}
        held: Counter[str] = Counter()
        for card in cards:
            type_id = canonical_gpu_type(card.gpu.type_id)
            if (catalog := catalog_of(type_id)) is not None:
                self.catalogs[type_id] = catalog
                held.update(_key(type_id, p) for p in _holds(card))
        self.capacity = dict(held)
        want = Counter({k: n for k, n in wanted.items() if n > 0})
        servable = Counter({k: n for k, n in want.items() if self._servable(k)})
        self.deficit = servable - held
        self.surplus = held - want

    def _servable(self, key: str) -> bool:
        type_id, _, profile = key.partition(":")
        catalog = self.catalogs.get(type_id)
        return catalog is not None and catalog.has_profile(profile)

    def of_type(self, counts: Counter[str], type_id: str) -> Counter[str]:
        prefix = type_id + ":"
        return Counter({k.removeprefix(prefix): n for k, n in counts.items() if k.startswith(prefix)})

    def cards_worth(self, counts: Counter[str]) -> float:
        total = 0.0
        for key, n in counts.items():
            type_id, _, profile = key.partition(":")
            total += _share(self.catalogs[type_id], profile) * n
        return total


def _rank(fill: _Fill, card: AheadCard) -> tuple[float, float, int, str, str]:
    # Slices gained per idle instance destroyed (an empty card, or one already close to the
    # forecast, goes first), then the most gained, the fewest created, then a stable order.
    return (
        -fill.gained / (1 + len(fill.step.destroy)),
        -fill.gained,
        len(fill.step.create),
        card.node_id,
        card.gpu.uuid,
    )


def _best(region: _Region, cards: Sequence[AheadCard]) -> tuple[AheadCard, _Fill] | None:
    best: tuple[tuple[float, float, int, str, str], AheadCard, _Fill] | None = None
    memo: dict[object, _Fill | None] = {}  # identical cards (type, instances) fill alike
    for card in cards:
        type_id = canonical_gpu_type(card.gpu.type_id)
        catalog = region.catalogs.get(type_id)
        if catalog is None:
            continue
        held = _held(card.gpu, card.in_use)
        deficit, budget = region.of_type(region.deficit, type_id), region.of_type(region.surplus, type_id)
        shape = (type_id, tuple((i.profile, i.start) for i in card.gpu.mig_instances), tuple(sorted(held)))
        if shape not in memo:
            memo[shape] = _fill_card(catalog, card.gpu, held, deficit, budget) if deficit else None
        fill = memo[shape]
        if fill is not None and (best is None or _rank(fill, card) < best[0]):
            best = (_rank(fill, card), card, fill)
    return (best[1], best[2]) if best else None


def _rounded(forecast: Mapping[str, float], slack: float) -> dict[str, int]:
    out = {k: max(0, math.ceil(v - slack)) for k, v in sorted(forecast.items()) if ":" in k}
    return {k: n for k, n in out.items() if n > 0}


def plan_ahead(
    *,
    forecast: Mapping[str, float],
    cards: Sequence[AheadCard],
    now: float,
    settings: AheadSettings = DEFAULT_AHEAD,
) -> AheadPlan:
    """New layouts for idle cards of one region so its MIG cards hold the forecast (see the
    module docstring).  ``cards``: the region's MIG-enabled cards; ``now``: unix seconds."""
    cards = [c for c in cards if c.gpu.mig_enabled]
    wanted = _rounded(forecast, settings.round_slack)
    region = _Region(wanted, cards)
    missing = region.cards_worth(region.deficit)
    threshold = max(settings.min_deficit_cards, settings.deficit_fraction * len(cards))
    plan = AheadPlan(
        wanted=wanted,
        capacity=dict(region.capacity),
        deficit=dict(region.deficit),
        surplus=dict(region.surplus),
        deficit_cards=round(missing, 3),
        threshold_cards=round(threshold, 3),
    )
    if not region.deficit:
        return msgspec.structs.replace(plan, reason="the cards hold the forecast")
    if missing < threshold:
        return msgspec.structs.replace(plan, reason="the deficit is under the threshold")
    skipped = {c.gpu.uuid: why for c in cards if (why := _why_not(c, now, settings)) is not None}
    free = [c for c in cards if c.gpu.uuid not in skipped]
    targets: list[CardTarget] = []
    while free and region.deficit and len(targets) < settings.max_cards:
        found = _best(region, free)
        if found is None:
            break
        card, fill = found
        targets.append(_target(card, fill))
        _consume(region, canonical_gpu_type(card.gpu.type_id), card.gpu, fill)
        free = [c for c in free if c is not card]
    return msgspec.structs.replace(
        plan, targets=targets, skipped=skipped, reason=_reason(region, targets, settings)
    )


def _target(card: AheadCard, fill: _Fill) -> CardTarget:
    type_id = canonical_gpu_type(card.gpu.type_id)
    return CardTarget(
        node_id=card.node_id,
        gpu_uuid=card.gpu.uuid,
        type_id=type_id,
        profiles=sorted(s.profile for s in fill.layout.slots),
        destroy=list(fill.step.destroy),
        create=list(fill.step.create),
        gains={_key(type_id, p): n for p, n in sorted(fill.gains.items())},
    )


def _consume(region: _Region, type_id: str, gpu: GpuInfo, fill: _Fill) -> None:
    before = Counter(_key(type_id, i.profile) for i in gpu.mig_instances)
    after = Counter(_key(type_id, s.profile) for s in fill.layout.slots)
    region.deficit -= Counter({_key(type_id, p): n for p, n in fill.gains.items()})
    region.surplus -= before - after  # idle instances of surplus profiles it destroys for good


def _reason(region: _Region, targets: list[CardTarget], settings: AheadSettings) -> str:
    if not region.deficit:
        return ""
    left = ", ".join(f"{n} x {k}" for k, n in sorted(region.deficit.items()))
    if len(targets) >= settings.max_cards:
        return f"still missing {left}: at most {settings.max_cards} cards are re-cut per pass"
    return f"still missing {left}: no idle card can take more"
