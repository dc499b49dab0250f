"""Golden tests from NVIDIA's documented examples (reference/mig.md §4, §7.2) and planner unit tests."""

from __future__ import annotations

import pytest

from mig import (
    Layout,
    NoPlan,
    SimulatedMigBackend,
    Slot,
    Transition,
    apply_transition,
    fits,
    list_instances,
    load_catalog,
    plan_layout,
    plan_transition,
)
from tide.api.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from tide.api.nodes import MigInstance

A100 = load_catalog("A100-40GB")
H100 = load_catalog("H100-80GB")
RTX = load_catalog("RTXPRO6000-96GB")
NAMES = {19: "1g.5gb", 14: "2g.10gb", 9: "3g.20gb", 5: "4g.20gb", 0: "7g.40gb", 15: "1g.10gb"}


def _auto(ids: list[int]) -> list[tuple[str, int, int]]:
    """`nvidia-smi mig -cgi <ids>` on a fresh A100: the driver chooses every placement."""
    sim = SimulatedMigBackend.from_spec("A100-40GB:mig")
    gpu = sim.list_gpus()[0].uuid
    made = [sim.create_gpu_instance_auto(gpu, i) for i in ids]
    return [(g.profile, g.placement.start, g.placement.size) for g in made]


def S(profile: str, start: int) -> Slot:
    return Slot(profile=profile, start=start)


# -- NVIDIA's examples: automatic placement depends on order -----------------------------------


def test_auto_placement_of_19_19_14_9_fails() -> None:
    with pytest.raises(ResourceExhausted):
        _auto([19, 19, 14, 9])


def test_auto_placement_of_9_19_14_19_fits() -> None:
    assert _auto([9, 19, 14, 19]) == [
        ("3g.20gb", 4, 4),
        ("1g.5gb", 0, 1),
        ("2g.10gb", 2, 2),
        ("1g.5gb", 1, 1),
    ]


def test_auto_placement_examples_1_and_3() -> None:
    assert _auto([19, 14, 5]) == [("1g.5gb", 6, 1), ("2g.10gb", 4, 2), ("4g.20gb", 0, 4)]
    got = _auto([14, 19, 19, 19, 19, 19])
    assert got[:2] == [("2g.10gb", 4, 2), ("1g.5gb", 6, 1)]
    assert sorted(s for _, s, _ in got[2:]) == [0, 1, 2, 3]


def test_explicit_planning_fits_the_multiset_auto_placement_fails() -> None:
    layout = plan_layout(A100, [], ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"])
    assert isinstance(layout, Layout)
    sim = SimulatedMigBackend.from_spec("A100-40GB:mig")
    gpu = sim.list_gpus()[0].uuid
    transition = plan_transition([], layout)
    assert isinstance(transition, Transition)
    after = apply_transition(sim, gpu, transition)
    assert sorted(i.profile for i in after) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]


def test_rtx_pro_6000_capture_2g_1g_1g() -> None:
    # Captured `-lgi` after `-cgi 2g.48gb,1g.24gb,1g.24gb`: 2g at 0:6, 1g at 6:3 and 9:3.
    sim = SimulatedMigBackend.from_spec("RTXPRO6000-96GB:mig")
    gpu = sim.list_gpus()[0].uuid
    made = [sim.create_gpu_instance_auto(gpu, i) for i in (5, 14, 14)]
    assert [(g.placement.start, g.placement.size) for g in made] == [(0, 6), (6, 3), (9, 3)]
    layout = plan_layout(RTX, [], ["1g.24gb", "2g.48gb", "1g.24gb"])
    assert isinstance(layout, Layout) and len(layout.slots) == 3


# -- plan_layout ---------------------------------------------------------------------------------


def test_layout_keeps_existing_instances_in_place() -> None:
    existing = [S("3g.40gb", 4), S("1g.10gb", 0)]
    layout = plan_layout(H100, existing, ["3g.40gb", "1g.10gb", "1g.10gb", "2g.20gb"])
    assert isinstance(layout, Layout)
    assert set(existing) <= set(layout.slots)


def test_fragmentation_is_repaired_by_moving_an_idle_instance() -> None:
    # The DRA driver's issue #933: 1g at 0, 1 and 5 leave no room for a 3g although 5 units are free.
    existing = [S("1g.10gb", 0), S("1g.10gb", 1), S("1g.10gb", 5)]
    assert fits(H100, existing, "3g.40gb") is None
    layout = plan_layout(H100, existing, ["1g.10gb"] * 3 + ["3g.40gb"])
    assert isinstance(layout, Layout)
    transition = plan_transition(existing, layout)
    assert transition == Transition(destroy=(S("1g.10gb", 5),), create=transition.create)
    assert S("3g.40gb", 4) in transition.create and len(transition.create) == 2


def test_busy_instances_stay_and_idle_ones_move_around_them() -> None:
    existing = [
        MigInstance(uuid="MIG-a", profile="1g.10gb", start=0, size=1),
        MigInstance(uuid="MIG-b", profile="1g.10gb", start=1, size=1),
        MigInstance(uuid="MIG-c", profile="1g.10gb", start=5, size=1, busy=True),
    ]
    layout = plan_layout(H100, existing, ["1g.10gb"] * 3 + ["3g.40gb"])
    assert isinstance(layout, Layout)
    assert S("1g.10gb", 5) in layout.slots and S("3g.40gb", 0) in layout.slots
    transition = plan_transition(existing, layout)
    assert isinstance(transition, Transition)
    assert set(transition.destroy) == {S("1g.10gb", 0), S("1g.10gb", 1)}


def test_a_busy_instance_that_is_not_wanted_blocks_the_plan() -> None:
    existing = [MigInstance(uuid="MIG-a", profile="2g.20gb", start=0, size=2, busy=True)]
    got = plan_layout(H100, existing, ["7g.80gb"])
    assert isinstance(got, NoPlan) and got.blocking == (S("2g.20gb", 0),)


def test_a_busy_instance_in_the_way_blocks_the_plan() -> None:
    got = plan_layout(H100, [S("1g.10gb", 2)], ["1g.10gb", "4g.40gb"], busy=[S("1g.10gb", 2)])
    assert isinstance(got, NoPlan) and got.blocking == (S("1g.10gb", 2),)
    assert "busy" in got.reason


@pytest.mark.parametrize(
    "wanted",
    [["7g.80gb", "1g.10gb"], ["3g.40gb"] * 3, ["1g.10gb+me"] * 2, ["1g.10gb"] * 8, ["4g.40gb", "4g.40gb"]],
)
def test_impossible_multisets_get_an_explanation(wanted: list[str]) -> None:
    got = plan_layout(H100, [], wanted)
    assert isinstance(got, NoPlan) and got.reason and got.blocking == ()


def test_engine_budget_limits_media_variants() -> None:
    assert isinstance(
        plan_layout(RTX, [], ["1g.24gb+me.all", "1g.24gb-me", "1g.24gb-me", "1g.24gb-me"]), Layout
    )
    assert isinstance(plan_layout(RTX, [], ["1g.24gb+me.all", "1g.24gb"]), NoPlan)
    assert isinstance(plan_layout(RTX, [], ["1g.24gb+me", "2g.48gb+me.all"]), NoPlan)


def test_unknown_profile_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        plan_layout(H100, [], ["3g.20gb"])


def test_full_card_layouts() -> None:
    for wanted in (
        ["7g.80gb"],
        ["1g.10gb"] * 7,
        ["1g.20gb"] * 4,
        ["2g.20gb"] * 3 + ["1g.10gb"],
        ["4g.40gb", "3g.40gb"],
    ):
        assert isinstance(plan_layout(H100, [], wanted), Layout), wanted


# -- plan_transition and fits --------------------------------------------------------------------


def test_transition_to_the_same_layout_is_empty() -> None:
    current = [S("2g.20gb", 0), S("3g.40gb", 4)]
    assert plan_transition(current, current) == Transition()


def test_transition_names_the_busy_instance_it_would_destroy() -> None:
    current = [S("2g.20gb", 0), S("3g.40gb", 4)]
    got = plan_transition(current, [S("7g.80gb", 0)], busy=[S("3g.40gb", 4)])
    assert isinstance(got, NoPlan) and got.blocking == (S("3g.40gb", 4),)
    assert "3g.40gb at 4" in got.reason


def test_transition_destroys_first_then_creates() -> None:
    got = plan_transition([S("2g.20gb", 0), S("3g.40gb", 4)], [S("7g.80gb", 0)])
    assert got == Transition(destroy=(S("2g.20gb", 0), S("3g.40gb", 4)), create=(S("7g.80gb", 0),))


def test_fits_uses_the_min_blocking_start() -> None:
    assert fits(H100, [], "1g.10gb") == 6
    assert fits(H100, [S("1g.10gb", 6)], "2g.20gb") == 4
    assert fits(H100, [S("4g.40gb", 0), S("3g.40gb", 4)], "1g.10gb") is None
    assert fits(RTX, [S("2g.48gb", 0)], "1g.24gb") == 6


def test_apply_transition_is_idempotent_and_rechecks_busy() -> None:
    sim = SimulatedMigBackend.from_spec("H100-80GB:mig")
    gpu = sim.list_gpus()[0].uuid
    first = plan_transition([], [S("3g.40gb", 0), S("3g.40gb", 4)])
    assert isinstance(first, Transition)
    apply_transition(sim, gpu, first)
    assert len(apply_transition(sim, gpu, first)) == 2  # again: nothing new
    busy = list_instances(sim, gpu)[1]
    sim.attach_process(gpu, 7, busy.uuid)
    stale = plan_transition(
        [S("3g.40gb", 0), S("3g.40gb", 4)], [S("7g.80gb", 0)]
    )  # planned before the worker
    assert isinstance(stale, Transition)
    with pytest.raises(FailedPrecondition, match="busy"):
        apply_transition(sim, gpu, stale)
    assert len(list_instances(sim, gpu)) == 2  # nothing was destroyed
