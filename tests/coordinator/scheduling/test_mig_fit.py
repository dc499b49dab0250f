"""The coordinator's MIG slice fitter (coordinator/scheduling/_mig_fit.py): properties and cases.

Properties over random cards: a proposed re-cut never destroys an instance in use or busy, it
holds the proposed profile (which satisfies the need) per mig.plan_layout, and a card is turned
down only when no re-cut around its instances in use could fit any candidate profile.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator._node_schema import MigLayoutRecord, nkeys
from coordinator.scheduling import GpuNeed, PlacementPlan, SliceRecut, parse_gpu_type_id
from coordinator.scheduling._gpu_types import profile_memory_gb
from coordinator.scheduling._mig_fit import (
    MigSliceFitter,
    card_state,
    catalog_of,
    plan_recut,
    profiles_for,
    slice_share,
)
from mig import Catalog, Layout, Slot, Transition, list_type_ids, load_catalog, plan_layout, plan_transition
from tide.api.gpu_types import canonical_gpu_type
from tide.api.nodes import GpuInfo, MigInstance

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TYPES = ["H100-80GB", "RTXPRO6000-96GB", "A100-40GB", "H100-94GB"]


def _card(
    type_id: str, slots: list[Slot], *, busy: frozenset[int] = frozenset(), uuid: str = "GPU-0"
) -> GpuInfo:
    cat = load_catalog(type_id)
    insts = [
        MigInstance(
            uuid=f"MIG-{s.profile}-{s.start}",
            profile=s.profile,
            start=s.start,
            size=cat.profile(s.profile).size,
            busy=i in busy,
        )
        for i, s in enumerate(sorted(slots))
    ]
    return GpuInfo(
        index=0, uuid=uuid, type_id=type_id, mig_capable=True, mig_enabled=True, mig_instances=insts
    )


def _fitter(**layouts: MigLayoutRecord) -> MigSliceFitter:
    return MigSliceFitter(layouts=layouts, errors={}, now=1000.0, min_interval_s=30.0)


@st.composite
def cards(draw: st.DrawFn) -> tuple[Catalog, GpuInfo, frozenset[str]]:
    """A legal random layout on a random SKU, some instances assigned, some busy."""
    cat = load_catalog(draw(st.sampled_from(TYPES)))
    names = [p.name for p in cat.profiles]
    slots: list[Slot] = []
    for name in draw(st.lists(st.sampled_from(names), max_size=7)):
        placed = plan_layout(cat, slots, [s.profile for s in slots] + [name], busy=slots)
        if isinstance(placed, Layout):
            slots = list(placed.slots)
    busy = draw(st.frozensets(st.integers(0, 6), max_size=2))
    gpu = _card(cat.type_id, slots, busy=busy)
    in_use = frozenset(i.uuid for i in gpu.mig_instances if draw(st.booleans()) and draw(st.booleans()))
    return cat, gpu, in_use


def _needs(cat: Catalog) -> st.SearchStrategy[GpuNeed]:
    named = st.sampled_from([p.name for p in cat.profiles]).map(
        lambda p: parse_gpu_type_id(f"{cat.type_id}:{p}")
    )
    classes = st.sampled_from([5, 10, 20, 24, 40, 48, 80, 96, 200]).map(
        lambda gb: parse_gpu_type_id(f"mig-{gb}gb")
    )
    return st.one_of(named, classes)


@SETTINGS
@given(st.data())
def test_a_proposed_recut_keeps_every_instance_in_use_and_holds_the_profile(data: st.DataObject) -> None:
    cat, gpu, in_use = data.draw(cards())
    need = data.draw(_needs(cat))
    fitter = _fitter()
    profile = fitter.fit(gpu=gpu, in_use=in_use, need=need)
    held = [Slot(profile=i.profile, start=i.start) for i in gpu.mig_instances if i.busy or i.uuid in in_use]
    if profile is None:
        # Complete: no candidate fits around the held instances at all.
        for p in profiles_for(cat, need):
            assert not isinstance(
                plan_layout(cat, gpu.mig_instances, [h.profile for h in held] + [p], held), Layout
            )
        return
    # The proposal satisfies the need.
    if need.kind == "mig":
        assert profile == need.profile
    else:
        assert profile_memory_gb(profile) >= need.min_memory_gb
    wanted = fitter.proposals[gpu.uuid]
    # What noded will compute from the same inputs: a legal layout, busy ones kept in place.
    layout = plan_layout(cat, gpu.mig_instances, wanted, busy=held)
    assert isinstance(layout, Layout)
    assert set(held) <= set(layout.slots)
    # One instance of the profile that no worker holds: the waiting worker's slice (usually
    # created by the cut; an idle one of that profile would have been handed out instead).
    assert (Counter(wanted) - Counter(h.profile for h in held))[profile] >= 1
    step = plan_transition(gpu.mig_instances, layout, busy=held)
    assert isinstance(step, Transition)
    assert not set(step.destroy) & set(held)


@SETTINGS
@given(st.data())
def test_a_memory_class_gets_the_smallest_profile_that_fits(data: st.DataObject) -> None:
    cat, gpu, in_use = data.draw(cards())
    gb = data.draw(st.sampled_from([5, 10, 20, 24, 40, 48]))
    need = parse_gpu_type_id(f"mig-{gb}gb")
    profile = _fitter().fit(gpu=gpu, in_use=in_use, need=need)
    fitting = [p for p in profiles_for(cat, need) if plan_recut(cat, gpu, in_use, p) is not None]
    assert profile == (fitting[0] if fitting else None)
    if fitting:
        assert all(profile_memory_gb(fitting[0]) <= profile_memory_gb(p) for p in fitting)
        assert "+" not in fitting[0] and "-me" not in fitting[0]


def test_idle_instances_in_the_way_go_and_the_others_stay_in_place() -> None:
    # H100: 1g@0 (in use), 1g@1 idle, 2g@2 idle, 3g@4 idle.  A 3g.40gb needs 0..3 or 4..7:
    # 4..7 is taken by an idle 3g of the same profile (it would be handed out before a re-cut),
    # so ask for a 4g.40gb: it only goes at 0, where the in-use 1g sits -> no re-cut.
    slots = [Slot(profile="1g.10gb", start=0), Slot(profile="1g.10gb", start=1)]
    slots += [Slot(profile="2g.20gb", start=2), Slot(profile="3g.40gb", start=4)]
    gpu = _card("H100-80GB", slots)
    fitter = _fitter()
    four = parse_gpu_type_id("H100-80GB:4g.40gb")
    assert fitter.fit(gpu=gpu, in_use=frozenset({"MIG-1g.10gb-0"}), need=four) is None
    # With nothing in use it fits: the three small ones go, the 3g stays where it is.
    assert fitter.fit(gpu=gpu, in_use=frozenset(), need=four) == "4g.40gb"
    assert sorted(fitter.proposals["GPU-0"]) == ["3g.40gb", "4g.40gb"]
    # A 2g.20gb next to an in-use 1g@0: the idle 1g@1 is in the way of 2g@0 only; the planner
    # keeps every idle instance it can and finds room by moving none of the others.
    two = parse_gpu_type_id("H100-80GB:1g.20gb")
    fitter = _fitter()
    assert fitter.fit(gpu=gpu, in_use=frozenset({"MIG-1g.10gb-0", "MIG-3g.40gb-4"}), need=two) == "1g.20gb"
    layout = plan_layout(load_catalog("H100-80GB"), gpu.mig_instances, fitter.proposals["GPU-0"], busy=[])
    assert isinstance(layout, Layout)
    assert {Slot(profile="1g.10gb", start=0), Slot(profile="3g.40gb", start=4)} <= set(layout.slots)


def test_hysteresis_and_pending_cards() -> None:
    gpu = _card("RTXPRO6000-96GB", [Slot(profile="1g.24gb", start=0)])
    need = parse_gpu_type_id("RTXPRO6000:1g.24gb")
    recent = MigLayoutRecord(node_id="n", gpu_uuid="GPU-0", profiles=["1g.24gb"], written_at=990.0)
    # Settled and cut 10 s ago: no second cut within the 30 s interval, one after it.
    assert card_state(gpu, recent, "") == "settled"
    assert _fitter(**{"GPU-0": recent}).fit(gpu=gpu, in_use=frozenset({"MIG-1g.24gb-0"}), need=need) is None
    later = MigSliceFitter(layouts={"GPU-0": recent}, errors={}, now=1021.0, min_interval_s=30.0)
    assert later.fit(gpu=gpu, in_use=frozenset({"MIG-1g.24gb-0"}), need=need) == "1g.24gb"
    # Pending (noded has not cut it yet): offered only for what the cut creates, at any time.
    pending = MigLayoutRecord(
        node_id="n", gpu_uuid="GPU-0", profiles=["1g.24gb", "2g.48gb"], written_at=999.0
    )
    fitter = _fitter(**{"GPU-0": pending})
    assert fitter.state(gpu) == "pending"
    assert fitter.fit(gpu=gpu, in_use=frozenset(), need=need) is None
    assert fitter.fit(gpu=gpu, in_use=frozenset(), need=parse_gpu_type_id("mig-40gb")) == "2g.48gb"
    assert fitter.proposals["GPU-0"] == ["1g.24gb", "2g.48gb"]
    # noded says it cannot: failed, so the card is neither withheld nor re-proposed as pending.
    failed = MigSliceFitter(
        layouts={"GPU-0": pending}, errors={"GPU-0": "busy"}, now=1000.0, min_interval_s=30.0
    )
    assert failed.state(gpu) == "failed"
    stale = MigSliceFitter(layouts={"GPU-0": pending}, errors={}, now=5000.0, min_interval_s=30.0)
    assert stale.state(gpu) == "failed"


def test_a_card_that_is_not_mig_enabled_or_has_no_catalog_is_never_offered() -> None:
    need = parse_gpu_type_id("mig-10gb")
    off = GpuInfo(index=0, uuid="GPU-0", type_id="H100-80GB", mig_capable=True, mig_enabled=False)
    other = GpuInfo(index=1, uuid="GPU-1", type_id="L40S-48GB", mig_enabled=True)
    assert _fitter().fit(gpu=off, in_use=frozenset(), need=need) is None
    assert _fitter().fit(gpu=other, in_use=frozenset(), need=need) is None
    # A named profile of another type never matches this card.
    h100 = _card("H100-80GB", [])
    assert _fitter().fit(gpu=h100, in_use=frozenset(), need=parse_gpu_type_id("A100-80GB:3g.40gb")) is None


def test_layout_writes_only_when_the_wanted_layout_changes() -> None:
    from coordinator.control._mig_pass import MigPass

    class _View:  # the parts of ClusterView MigPass reads
        mig_layouts = {
            "n": {
                "GPU-0": (
                    MigLayoutRecord(node_id="n", gpu_uuid="GPU-0", profiles=["1g.24gb"], written_at=1.0),
                    5,
                )
            }
        }
        nodes: dict[str, object] = {}

    mig = MigPass(_View(), now=100.0, min_interval_s=30.0)  # type: ignore[arg-type]
    recut = SliceRecut(node_id="n", gpu_uuid="GPU-0", profile="2g.48gb", endpoint_id="ep", worker_id="w")
    mig.fitter.proposals["GPU-0"] = ["2g.48gb", "1g.24gb"]
    ops = mig.ops(PlacementPlan(recuts=[recut]))
    assert [op.key for op in ops] == [nkeys.mig_layout("n", "GPU-0")]
    assert b'"profiles":["1g.24gb","2g.48gb"]' in ops[0].value
    mig.fitter.proposals["GPU-0"] = ["1g.24gb"]
    assert mig.ops(PlacementPlan(recuts=[recut])) == []
    assert "re-cut" in MigPass.reasons(PlacementPlan(recuts=[recut]))["ep"]


def test_slice_price_share_follows_the_catalog() -> None:
    assert slice_share("H100-80GB", "3g.40gb") == 0.5
    assert slice_share("H100-80GB", "1g.10gb") == 1 / 7  # compute share beats 1/8 of the memory
    assert slice_share("H100-80GB", "7g.80gb") == 1.0
    assert slice_share("RTXPRO6000-96GB", "1g.24gb") == 0.25
    assert slice_share("RTXPRO6000-96GB", "2g.48gb") == 0.5
    assert slice_share("RTXPRO6000-96GB", "4g.96gb") == 1.0
    assert slice_share("NVIDIA H100 80GB HBM3", "2g.20gb") == 2 / 7
    assert slice_share("Mystery-10GB", "2g.5gb") == 2 / 7  # no catalog: compute slices of 7
    from coordinator.api._cluster_routes import _price

    prices = {"H100-80GB": 2.0, "RTXPRO6000-96GB:1g.24gb": 0.7}
    assert _price(prices, "H100-80GB:3g.40gb") == 1.0
    assert _price(prices, "RTXPRO6000-96GB:1g.24gb") == 0.7  # the table wins
    assert _price(prices, "H100-80GB") == 2.0


def test_catalogs_and_the_alias_table_agree() -> None:
    for type_id in list_type_ids():
        cat = load_catalog(type_id)
        assert catalog_of(type_id) == cat
        for name in cat.nvml_names:
            assert canonical_gpu_type(name) == type_id, name
    assert canonical_gpu_type("NVIDIA H100 NVL") == "H100-94GB"
    assert parse_gpu_type_id("RTXPRO6000:1g.24gb").label == "RTXPRO6000-96GB:1g.24gb"
