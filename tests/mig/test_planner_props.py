"""Property tests: the simulator never breaks the placement rules, and the planner's plans are sound,
complete and apply cleanly (reference/mig.md §7.2).

The oracle below re-states the rules over sets of memory units, independently of mig._rules.
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mig import (
    Catalog,
    Layout,
    NoPlan,
    SimulatedMigBackend,
    Slot,
    Transition,
    apply_transition,
    fits,
    list_instances,
    list_type_ids,
    load_catalog,
    plan_layout,
    plan_transition,
)
from tide.api.errors import InvalidArgument, ResourceExhausted

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _units(cat: Catalog, s: Slot) -> set[int]:
    return set(range(s.start, s.start + cat.profile(s.profile).size))


def legal(cat: Catalog, slots: list[Slot]) -> bool:
    """Every slot on a legal start, no shared memory unit, caps, compute slices and engines respected."""
    used: set[int] = set()
    for s in slots:
        p = cat.profile(s.profile)
        if s.start not in p.starts or used & _units(cat, s):
            return False
        used |= _units(cat, s)
    counts = Counter(s.profile for s in slots)
    if any(n > cat.profile(name).max_count for name, n in counts.items()):
        return False
    if sum(cat.profile(s.profile).compute_slices for s in slots) > cat.compute_slices:
        return False
    for engine, budget in cat.engine_budget.limits().items():
        if sum(cat.profile(s.profile).engines()[engine] for s in slots) > budget:
            return False
    return True


def brute_force_fits(cat: Catalog, wanted: list[str]) -> bool:
    choices = [cat.profile(n).starts for n in wanted]
    return any(
        legal(cat, [Slot(profile=n, start=s) for n, s in zip(wanted, starts, strict=True)])
        for starts in itertools.product(*choices)
    )


catalogs = st.sampled_from(list_type_ids()).map(load_catalog)


@st.composite
def catalog_and_profiles(draw: st.DrawFn, max_size: int) -> tuple[Catalog, list[str]]:
    cat = draw(catalogs)
    names = [p.name for p in cat.profiles]
    return cat, draw(st.lists(st.sampled_from(names), min_size=1, max_size=max_size))


@SETTINGS
@given(st.data())
def test_random_create_destroy_never_breaks_the_rules(data: st.DataObject) -> None:
    cat = data.draw(catalogs)
    sim = SimulatedMigBackend.from_spec(f"{cat.type_id}:mig")
    gpu = sim.list_gpus()[0].uuid
    for _ in range(data.draw(st.integers(1, 25))):
        live = [Slot(profile=g.profile, start=g.placement.start) for g in sim.list_gpu_instances(gpu)]
        if live and data.draw(st.booleans()):
            gi = data.draw(st.sampled_from(sim.list_gpu_instances(gpu)))
            sim.destroy_gpu_instance(gpu, gi.gi_id)
            continue
        p = data.draw(st.sampled_from(cat.profiles))
        start = data.draw(st.integers(0, cat.grid - 1))
        ok = legal(cat, [*live, Slot(profile=p.name, start=start)])
        try:
            sim.create_gpu_instance(gpu, p.profile_id, start)
            assert ok, f"created {p.name} at {start} next to {live}"
        except (ResourceExhausted, InvalidArgument):
            assert not ok, f"refused {p.name} at {start} next to {live}"
        now = [Slot(profile=g.profile, start=g.placement.start) for g in sim.list_gpu_instances(gpu)]
        assert legal(cat, now)
        for q in cat.profiles:
            cap = sim.remaining_capacity(gpu, q.profile_id)
            assert cap >= 0
            assert (cap > 0) == any(legal(cat, [*now, Slot(profile=q.name, start=s)]) for s in q.starts)


@SETTINGS
@given(catalog_and_profiles(max_size=4))
def test_plan_layout_is_sound_and_complete(case: tuple[Catalog, list[str]]) -> None:
    cat, wanted = case
    got = plan_layout(cat, [], wanted)
    if isinstance(got, Layout):
        assert legal(cat, list(got.slots))
        assert Counter(s.profile for s in got.slots) == Counter(wanted)
    else:
        assert not brute_force_fits(cat, wanted), f"{wanted} fits a {cat.type_id} but the planner said {got}"


@st.composite
def live_card(draw: st.DrawFn) -> tuple[Catalog, list[Slot], set[Slot], list[str]]:
    cat, names = draw(catalog_and_profiles(max_size=7))
    live: list[Slot] = []
    for n in names:
        start = fits(cat, live, n)
        if start is not None:
            live.append(Slot(profile=n, start=start))
    busy = {s for s in live if draw(st.booleans())}
    extra = draw(st.lists(st.sampled_from([p.name for p in cat.profiles]), max_size=4))
    kept = draw(st.lists(st.sampled_from(live), max_size=len(live), unique=True)) if live else []
    return cat, live, busy, [s.profile for s in kept] + extra


@SETTINGS
@given(live_card())
def test_transitions_spare_busy_instances_and_replanning_is_empty(
    case: tuple[Catalog, list[Slot], set[Slot], list[str]],
) -> None:
    cat, live, busy, wanted = case
    sim = SimulatedMigBackend.from_spec(f"{cat.type_id}:mig")
    gpu = sim.list_gpus()[0].uuid
    apply_transition(sim, gpu, Transition(create=tuple(live)))
    for pid, inst in enumerate(list_instances(sim, gpu), start=100):
        if Slot(profile=inst.profile, start=inst.start) in busy:
            sim.attach_process(gpu, pid, inst.uuid)
    before = list_instances(sim, gpu)
    layout = plan_layout(cat, before, wanted)
    if isinstance(layout, NoPlan):
        # Only busy instances (or the card itself) can make a plan impossible.
        assert layout.blocking or isinstance(plan_layout(cat, [], wanted), NoPlan)
        assert set(layout.blocking) <= busy
        return
    assert busy <= set(layout.slots)
    transition = plan_transition(before, layout)
    assert isinstance(transition, Transition)
    assert not set(transition.destroy) & busy
    after = apply_transition(sim, gpu, transition)
    assert Counter(i.profile for i in after) == Counter(wanted)
    busy_uuids = {i.uuid for i in before if i.busy}
    assert busy_uuids <= {i.uuid for i in after}
    again = plan_layout(cat, after, wanted)
    assert isinstance(again, Layout) and again.slots == layout.slots
    assert plan_transition(after, again) == Transition()
