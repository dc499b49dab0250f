"""Ahead-of-time MIG partitioning (coordinator/scheduling/_mig_ahead.py): properties and cases.

Properties over random regions (random SKUs and legal layouts, some instances assigned or busy,
some cards under an operator's layout or re-cut a moment ago) and random forecasts: a busy
instance is never destroyed, noded's own planner turns each target into exactly the planned
transition, churn is bounded, and planning again on the planned state changes nothing.
"""

from __future__ import annotations

import itertools
from collections import Counter

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator._node_schema import MigLayoutRecord
from coordinator.scheduling._mig_ahead import AheadCard, AheadPlan, AheadSettings, plan_ahead, window_hour
from mig import Layout, Slot, load_catalog, plan_layout
from tide.api.nodes import GpuInfo, MigInstance

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = ["H100-80GB", "RTXPRO6000-96GB", "A100-40GB"]
NOW = 1_800_000_000.0
EAGER = AheadSettings(card_interval_s=0.0)  # re-cut as often as it likes: the planner alone decides
_ids = itertools.count()


def _gpu(type_id: str, slots: list[Slot], uuid: str, busy: frozenset[int] = frozenset()) -> GpuInfo:
    cat = load_catalog(type_id)
    insts = [
        MigInstance(
            uuid=f"MIG-{next(_ids)}",
            profile=s.profile,
            start=s.start,
            size=cat.profile(s.profile).size,
            busy=i in busy,
        )
        for i, s in enumerate(sorted(slots, key=lambda s: s.start))
    ]
    return GpuInfo(
        index=0, uuid=uuid, type_id=type_id, mig_capable=True, mig_enabled=True, mig_instances=insts
    )


def _settled(gpu: GpuInfo, *, source: str = "scheduler", at: float = 0.0) -> MigLayoutRecord:
    profiles = sorted(i.profile for i in gpu.mig_instances)
    return MigLayoutRecord(node_id="n", gpu_uuid=gpu.uuid, profiles=profiles, written_at=at, source=source)


@st.composite
def regions(draw: st.DrawFn) -> list[AheadCard]:
    cards = []
    for n in range(draw(st.integers(1, 4))):
        cat = load_catalog(draw(st.sampled_from(TYPES)))
        slots: list[Slot] = []
        for name in draw(st.lists(st.sampled_from([p.name for p in cat.profiles]), max_size=6)):
            placed = plan_layout(cat, slots, [s.profile for s in slots] + [name], busy=slots)
            if isinstance(placed, Layout):
                slots = list(placed.slots)
        gpu = _gpu(cat.type_id, slots, f"GPU-{n}", draw(st.frozensets(st.integers(0, 6), max_size=2)))
        in_use = frozenset(i.uuid for i in gpu.mig_instances if draw(st.integers(0, 3)) == 0)
        kind = draw(st.sampled_from(["none", "old", "old", "fresh", "admin"]))
        record = (
            None
            if kind == "none"
            else _settled(
                gpu,
                source="admin" if kind == "admin" else "scheduler",
                at=NOW - (10 if kind == "fresh" else 7200),
            )
        )
        cards.append(AheadCard(node_id=f"node-{n % 2}", gpu=gpu, in_use=in_use, record=record))
    return cards


@st.composite
def forecasts(draw: st.DrawFn, cards: list[AheadCard]) -> dict[str, float]:
    keys = sorted({f"{c.gpu.type_id}:{p.name}" for c in cards for p in load_catalog(c.gpu.type_id).profiles})
    keys += ["H100-80GB", "B200-180GB:1g.23gb"]  # whole GPUs, a type the region lacks
    return draw(st.dictionaries(st.sampled_from(keys), st.floats(0, 6, allow_nan=False), max_size=6))


def _held(card: AheadCard) -> set[Slot]:
    return {
        Slot(profile=i.profile, start=i.start)
        for i in card.gpu.mig_instances
        if i.busy or i.uuid in card.in_use
    }


def _apply(cards: list[AheadCard], plan: AheadPlan, now: float) -> list[AheadCard]:
    """What noded does with the plan: each target card now holds its layout (new slices idle)."""
    out = []
    by_gpu = {t.gpu_uuid: t for t in plan.targets}
    for card in cards:
        t = by_gpu.get(card.gpu.uuid)
        if t is None:
            out.append(card)
            continue
        gone = set(t.destroy)
        kept = [i for i in card.gpu.mig_instances if Slot(profile=i.profile, start=i.start) not in gone]
        made = _gpu(card.gpu.type_id, list(t.create), card.gpu.uuid).mig_instances
        gpu = msgspec.structs.replace(card.gpu, mig_instances=sorted([*kept, *made], key=lambda i: i.start))
        rec = MigLayoutRecord(
            node_id=card.node_id, gpu_uuid=gpu.uuid, profiles=t.profiles, written_at=now, source="ahead"
        )
        out.append(AheadCard(node_id=card.node_id, gpu=gpu, in_use=card.in_use, record=rec))
    return out


@SETTINGS
@given(st.data())
def test_busy_instances_stay_and_noded_applies_exactly_the_planned_transition(data: st.DataObject) -> None:
    cards = data.draw(regions())
    plan = plan_ahead(forecast=data.draw(forecasts(cards)), cards=cards, now=NOW)
    by_gpu = {c.gpu.uuid: c for c in cards}
    for t in plan.targets:
        card = by_gpu[t.gpu_uuid]
        held = _held(card)
        assert not held & set(t.destroy), "a busy or assigned instance would be destroyed"
        # noded plans the same layout from the stored profiles (mig.plan_layout is deterministic).
        layout = plan_layout(load_catalog(t.type_id), card.gpu.mig_instances, t.profiles, busy=sorted(held))
        assert isinstance(layout, Layout)
        now_slots = {Slot(profile=i.profile, start=i.start) for i in card.gpu.mig_instances}
        assert set(layout.slots) == (now_slots - set(t.destroy)) | set(t.create)
        assert card.record is None or (card.record.source != "admin" and NOW - card.record.written_at >= 1800)


@SETTINGS
@given(st.data())
def test_churn_is_bounded_by_the_deficit_the_surplus_and_the_card_cap(data: st.DataObject) -> None:
    cards = data.draw(regions())
    cap = data.draw(st.integers(1, 3))
    plan = plan_ahead(
        forecast=data.draw(forecasts(cards)), cards=cards, now=NOW, settings=AheadSettings(max_cards=cap)
    )
    assert len(plan.targets) <= cap and len({t.gpu_uuid for t in plan.targets}) == len(plan.targets)
    gains: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for t in plan.targets:
        assert t.gains and all(n > 0 for n in t.gains.values())
        gains.update(t.gains)
        before = Counter(f"{t.type_id}:{s.profile}" for s in t.destroy)
        after = Counter(f"{t.type_id}:{s.profile}" for s in t.create)
        lost += before - after
    assert not gains - Counter(plan.deficit), "gained more than the forecast lacks"
    assert not lost - Counter(plan.surplus), "destroyed slices the forecast wants"
    if not plan.deficit or plan.deficit_cards < plan.threshold_cards:
        assert plan.targets == []


@SETTINGS
@given(st.data())
def test_planning_on_its_own_output_changes_nothing(data: st.DataObject) -> None:
    cards = data.draw(regions())
    forecast = data.draw(forecasts(cards))
    plan = plan_ahead(forecast=forecast, cards=cards, now=NOW, settings=EAGER)
    after = _apply(cards, plan, NOW)
    if len(plan.targets) < EAGER.max_cards:
        again = plan_ahead(forecast=forecast, cards=after, now=NOW + 60, settings=EAGER)
        assert again.targets == [], (plan, again)
    # With the default hysteresis the cards just cut are left alone anyway.
    assert not {t.gpu_uuid for t in plan_ahead(forecast=forecast, cards=after, now=NOW + 60).targets} & {
        t.gpu_uuid for t in plan.targets
    }


def _h100(slots: list[tuple[str, int]], uuid: str, busy: frozenset[int] = frozenset()) -> AheadCard:
    gpu = _gpu("H100-80GB", [Slot(profile=p, start=s) for p, s in slots], uuid, busy)
    return AheadCard(node_id="node-1", gpu=gpu, record=_settled(gpu, at=NOW - 7200))


def test_prefers_the_card_closest_to_the_forecast() -> None:
    full7g = _h100([("7g.80gb", 0)], "GPU-a")
    half = _h100([("3g.40gb", 4)], "GPU-b")  # room for 4 x 1g without destroying anything
    plan = plan_ahead(forecast={"H100-80GB:1g.10gb": 3}, cards=[full7g, half], now=NOW)
    assert [t.gpu_uuid for t in plan.targets] == ["GPU-b"]
    assert plan.targets[0].destroy == [] and plan.targets[0].gains == {"H100-80GB:1g.10gb": 3}
    # Only when no card has room is an idle slice nobody forecasts destroyed.
    plan = plan_ahead(forecast={"H100-80GB:1g.10gb": 3, "H100-80GB:3g.40gb": 1}, cards=[full7g], now=NOW)
    assert [s.profile for s in plan.targets[0].destroy] == ["7g.80gb"]
    assert sorted(plan.targets[0].profiles) == ["1g.10gb", "1g.10gb", "1g.10gb", "3g.40gb"]


def test_a_busy_slice_stays_and_the_rest_of_its_card_is_used() -> None:
    card = _h100([("3g.40gb", 0), ("3g.40gb", 4)], "GPU-a", busy=frozenset({1}))
    plan = plan_ahead(forecast={"H100-80GB:2g.20gb": 2}, cards=[card], now=NOW)
    (t,) = plan.targets
    assert t.destroy == [Slot(profile="3g.40gb", start=0)]
    assert Slot(profile="3g.40gb", start=4) not in t.create and sorted(t.profiles) == [
        "2g.20gb",
        "2g.20gb",
        "3g.40gb",
    ]


def test_hysteresis_small_deficits_recent_cuts_and_operator_layouts_are_left_alone() -> None:
    cards = [_h100([], f"GPU-{i}") for i in range(40)]  # 40 cards: 5% is 2 card-equivalents
    small = plan_ahead(forecast={"H100-80GB:3g.40gb": 3}, cards=cards, now=NOW)  # 1.5 cards
    assert small.targets == [] and "threshold" in small.reason
    big = plan_ahead(forecast={"H100-80GB:3g.40gb": 6}, cards=cards, now=NOW)
    assert len(big.targets) == 3 and big.reason == ""
    fresh = _h100([], "GPU-x")
    fresh = AheadCard(node_id="n", gpu=fresh.gpu, record=_settled(fresh.gpu, at=NOW - 60))
    other = _h100([], "GPU-y").gpu
    admin = AheadCard(node_id="n", gpu=other, record=_settled(other, source="admin"))
    plan = plan_ahead(forecast={"H100-80GB:3g.40gb": 2}, cards=[fresh, admin], now=NOW)
    assert plan.targets == [] and set(plan.skipped.values()) == {
        "re-cut 60 s ago (at most once per 1800 s)",
        "an operator's layout (tide mig release frees it)",
    }


def test_a_flat_forecast_that_the_cards_hold_changes_nothing() -> None:
    card = _h100([("3g.40gb", 4), ("2g.20gb", 0), ("1g.10gb", 2)], "GPU-a")
    forecast = {
        "H100-80GB:3g.40gb": 1.2,
        "H100-80GB:2g.20gb": 0.9,
        "H100-80GB:1g.10gb": 0.3,
        "H100-80GB": 4.0,
    }
    plan = plan_ahead(forecast=forecast, cards=[card], now=NOW, settings=EAGER)
    assert plan.targets == [] and plan.reason == "the cards hold the forecast"
    assert plan.wanted == {"H100-80GB:1g.10gb": 1, "H100-80GB:2g.20gb": 1, "H100-80GB:3g.40gb": 1}


def test_the_window_turns_to_the_next_hour_lead_seconds_before_it() -> None:
    hour = 500_000
    assert window_hour(hour * 3600 + 3000, 600) == hour + 1
    assert window_hour(hour * 3600 + 2999, 600) == hour
