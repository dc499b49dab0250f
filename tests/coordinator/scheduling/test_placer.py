"""The placer and the reconcile planner: hypothesis properties plus worked examples."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduling import (
    ClusterSnapshot,
    CurrentWorker,
    GpuNeed,
    NodeSnapshot,
    PlacementPlan,
    PlacementRequest,
    canonical_gpu_type,
    parse_gpu_type_id,
    plan_placement,
    plan_reconcile,
)
from tide.api.endpoints import EndpointSpec
from tide.api.errors import InvalidArgument
from tide.api.nodes import GpuInfo, MigInstance, NodeInventory

DCS = ["EU-RO-1", "US-TX-3", "CA-MTL-1"]
TYPES = ["H100-80GB", "A100-80GB", "L40S-48GB"]
PROFILES = {"1g.10gb": 10, "2g.20gb": 20, "3g.40gb": 40}
TYPE_IDS = [*TYPES, "NVIDIA H100 80GB HBM3", "H100-80GB:3g.40gb", "H100-80GB:1g.10gb", "mig-20gb"]


# ----------------------------------------------------------------- builders


def _gpus(node: str, type_id: str, n: int, *, start: int = 0) -> list[GpuInfo]:
    return [GpuInfo(index=i, uuid=f"GPU-{node}-{i}", type_id=type_id) for i in range(start, start + n)]


def _mig_card(node: str, index: int, profiles: list[str], busy: int = 0) -> GpuInfo:
    instances = [
        MigInstance(uuid=f"MIG-{node}-{index}-{k}", profile=p, start=k, size=1, busy=k < busy)
        for k, p in enumerate(profiles)
    ]
    return GpuInfo(
        index=index,
        uuid=f"GPU-{node}-{index}",
        type_id="H100-80GB",
        mig_capable=True,
        mig_enabled=True,
        mig_instances=instances,
    )


def _node(node_id: str, gpus: list[GpuInfo], dc: str = "EU-RO-1", **kw: Any) -> NodeSnapshot:
    images = kw.pop("images", [])
    inventory = NodeInventory(hostname=node_id, datacenter=dc, gpus=gpus, images=images)
    return NodeSnapshot(node_id=node_id, inventory=inventory, **kw)


def _request(endpoint_id: str, n: int, **spec: Any) -> PlacementRequest:
    spec.setdefault("image", "img")
    return PlacementRequest(
        endpoint_id=endpoint_id,
        spec=EndpointSpec(name=endpoint_id, **spec),
        worker_ids=[f"{endpoint_id}-w{i}" for i in range(n)],
    )


def _apply(snapshot: ClusterSnapshot, plan: PlacementPlan) -> ClusterSnapshot:
    """What the applier writes: every assigned device becomes in use."""
    used: dict[str, list[str]] = {}
    for a in plan.assignments:
        used.setdefault(a.node_id, []).extend(a.devices)
    nodes = [msgspec.structs.replace(n, in_use=[*n.in_use, *used.get(n.node_id, [])]) for n in snapshot.nodes]
    return ClusterSnapshot(nodes=nodes, revision=snapshot.revision + 1)


# ------------------------------------------------------------- strategies


@st.composite
def snapshots(draw: st.DrawFn) -> ClusterSnapshot:
    nodes = []
    for n in range(draw(st.integers(0, 10))):
        node_id = f"n{n}"
        gpus: list[GpuInfo] = []
        for index in range(draw(st.integers(0, 8))):
            if draw(st.integers(0, 4)) == 0:
                profiles = draw(st.lists(st.sampled_from(sorted(PROFILES)), max_size=4))
                gpus.append(_mig_card(node_id, index, profiles, busy=draw(st.integers(0, 2))))
            else:
                gpus.append(_gpus(node_id, draw(st.sampled_from(TYPES)), 1, start=index)[0])
        every = [g.uuid for g in gpus] + [m.uuid for g in gpus for m in g.mig_instances]
        nodes.append(
            _node(
                node_id,
                gpus,
                dc=draw(st.sampled_from(DCS)),
                draining=draw(st.integers(0, 7)) == 0,
                lost=draw(st.integers(0, 7)) == 0,
                in_use=draw(st.lists(st.sampled_from(every), unique=True)) if every else [],
                images=draw(st.sampled_from([[], ["img-a"], ["img-b"]])),
                flashboot_endpoints=draw(st.sampled_from([[], ["e0"], ["e1", "e2"]])),
                revision=n + 10,
            )
        )
    return ClusterSnapshot(nodes=nodes, revision=draw(st.integers(0, 100)))


@st.composite
def request_lists(draw: st.DrawFn) -> list[PlacementRequest]:
    requests = []
    for e in range(draw(st.integers(1, 4))):
        requests.append(
            _request(
                f"e{e}",
                draw(st.integers(1, 8)),
                image=draw(st.sampled_from(["img-a", "img-b", "img-c"])),
                gpu_type_ids=draw(st.lists(st.sampled_from(TYPE_IDS), max_size=3, unique=True)),
                gpu_count=draw(st.sampled_from([1, 1, 1, 2, 3, 4, 8])),
                data_center_ids=draw(st.lists(st.sampled_from(DCS), max_size=2, unique=True)),
            )
        )
    return requests


# ------------------------------------------------------- invariant helpers


def _free(snapshot: ClusterSnapshot) -> dict[str, tuple[str, str, str]]:
    """Every device the placer may hand out: uuid -> (node, kind key, dc)."""
    free: dict[str, tuple[str, str, str]] = {}
    for n in snapshot.nodes:
        if n.draining or n.lost:
            continue
        for g in n.inventory.gpus:
            t = canonical_gpu_type(g.type_id)
            if not g.mig_enabled and g.uuid not in n.in_use:
                free[g.uuid] = (n.node_id, t, n.inventory.datacenter)
            for m in g.mig_instances if g.mig_enabled else []:
                if not m.busy and m.uuid not in n.in_use:
                    free[m.uuid] = (n.node_id, f"{t}:{m.profile}", n.inventory.datacenter)
    return free


def _matches(need: GpuNeed, key: str) -> bool:
    if need.kind == "any":
        return ":" not in key
    if need.kind == "gpu":
        return key == need.type_id
    if need.kind == "mig":
        return key == f"{need.type_id}:{need.profile}"
    return ":" in key and PROFILES[key.split(":")[1]] >= need.min_memory_gb


def _fits(free: dict[str, tuple[str, str, str]], need: GpuNeed, count: int, dcs: list[str]) -> bool:
    """Does some host still have ``count`` free devices for ``need`` in ``dcs``?"""
    if need.kind in ("mig", "mig-class") and count > 1:
        return False
    per_host: Counter[tuple[str, str]] = Counter(
        (node, key) for node, key, dc in free.values() if _matches(need, key) and (not dcs or dc in dcs)
    )
    return any(c >= (1 if ":" in key else count) for (_, key), c in per_host.items())


def _needs(spec: EndpointSpec) -> list[GpuNeed]:
    return [parse_gpu_type_id(t) for t in spec.gpu_type_ids] or [GpuNeed(kind="any", label="any")]


# ------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(snapshots(), request_lists())
def test_placer_invariants(snapshot: ClusterSnapshot, requests: list[PlacementRequest]) -> None:
    plan = plan_placement(snapshot, requests)
    free = _free(snapshot)
    after = _free(_apply(snapshot, plan))
    by_endpoint = {r.endpoint_id: r for r in requests}
    used: list[str] = []
    for a in plan.assignments:
        spec = by_endpoint[a.endpoint_id].spec
        homes = [free[d] for d in a.devices]  # KeyError = a device that was not free
        used.extend(a.devices)
        assert {h[0] for h in homes} == {a.node_id}  # one host
        assert len({h[1] for h in homes}) == 1
        key = homes[0][1]
        assert len(a.devices) == (1 if a.mig_profile else spec.gpu_count)
        assert a.price_key == key
        assert a.gpu_type == key.split(":")[0]
        assert not spec.data_center_ids or homes[0][2] in spec.data_center_ids
        needs = _needs(spec)
        chosen = next(i for i, need in enumerate(needs) if _matches(need, key))
        for higher in needs[:chosen]:  # fallback only when every higher priority is full
            assert not _fits(after, higher, spec.gpu_count, spec.data_center_ids)
    assert len(used) == len(set(used))  # no GPU or slice twice
    placed = [a.worker_id for a in plan.assignments] + [w for ws in plan.unplaced.values() for w in ws]
    assert sorted(placed) == sorted(w for r in requests for w in r.worker_ids)
    assert plan.recuts == []
    assert set(plan.reasons) == set(plan.unplaced)
    for endpoint_id in plan.unplaced:
        spec = by_endpoint[endpoint_id].spec
        assert all(not _fits(after, n, spec.gpu_count, spec.data_center_ids) for n in _needs(spec))
    assert set(plan.node_revisions) == {a.node_id for a in plan.assignments}
    assert plan.snapshot_revision == snapshot.revision
    assert plan_placement(snapshot, requests) == plan  # deterministic


@settings(max_examples=200, deadline=None)
@given(snapshots(), request_lists())
def test_placer_apply_then_replan_places_nothing_more(
    snapshot: ClusterSnapshot, requests: list[PlacementRequest]
) -> None:
    plan = plan_placement(snapshot, requests)
    leftover = [
        msgspec.structs.replace(r, worker_ids=plan.unplaced[r.endpoint_id])
        for r in requests
        if r.endpoint_id in plan.unplaced
    ]
    again = plan_placement(_apply(snapshot, plan), leftover)
    assert again.assignments == []
    assert again.unplaced == plan.unplaced


class _RecordingFitter:
    """Says yes while a card has at most one instance in use; records what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, frozenset[str]]] = []

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None:
        self.seen.append((gpu.uuid, in_use))
        return (need.profile or "1g.24gb") if len(in_use) <= 1 else None


@settings(max_examples=200, deadline=None)
@given(snapshots(), request_lists())
def test_placer_recuts_never_double_book_a_card_or_its_slices(
    snapshot: ClusterSnapshot, requests: list[PlacementRequest]
) -> None:
    fitter = _RecordingFitter()
    plan = plan_placement(snapshot, requests, slice_fitter=fitter)
    order = {w: i for i, w in enumerate(w for r in requests for w in r.worker_ids)}
    card_of = {m.uuid: g.uuid for n in snapshot.nodes for g in n.inventory.gpus for m in g.mig_instances}
    cards = [r.gpu_uuid for r in plan.recuts]
    assert len(cards) == len(set(cards))
    outcome = [a.worker_id for a in plan.assignments] + [r.worker_id for r in plan.recuts]
    outcome += [w for ws in plan.unplaced.values() for w in ws]
    assert sorted(outcome) == sorted(order)
    used = [d for a in plan.assignments for d in a.devices]
    assert len(used) == len(set(used))
    for recut in plan.recuts:
        node = next(n for n in snapshot.nodes if n.node_id == recut.node_id)
        assert not (node.draining or node.lost)
        before = {
            d
            for a in plan.assignments
            for d in a.devices
            if card_of.get(d) == recut.gpu_uuid and order[a.worker_id] < order[recut.worker_id]
        }
        after = [
            a.worker_id
            for a in plan.assignments
            if any(card_of.get(d) == recut.gpu_uuid for d in a.devices)
            and order[a.worker_id] > order[recut.worker_id]
        ]
        assert after == []  # a reserved card hands out no slice
        shown = [in_use for uuid, in_use in fitter.seen if uuid == recut.gpu_uuid]
        assert before <= shown[-1]  # the fitter saw this plan's own assignments as in use


@st.composite
def reconcile_inputs(draw: st.DrawFn) -> tuple[list[CurrentWorker], dict[str, int], list[str]]:
    endpoints = ["a", "b", "c", "d"]
    current = [
        CurrentWorker(worker_id=f"w{i}", endpoint_id=draw(st.sampled_from(endpoints)))
        for i in range(draw(st.integers(0, 15)))
    ]
    desired = draw(st.dictionaries(st.sampled_from(endpoints), st.integers(0, 6)))
    stop = draw(st.lists(st.sampled_from([w.worker_id for w in current] + ["gone"]), unique=True))
    return current, desired, stop


@settings(max_examples=300, deadline=None)
@given(reconcile_inputs())
def test_reconcile_apply_then_replan_is_empty(
    case: tuple[list[CurrentWorker], dict[str, int], list[str]],
) -> None:
    current, desired, stop = case
    new_ids = (f"new{i}" for i in range(1000))
    plan = plan_reconcile(current=current, desired=desired, new_ids=new_ids, stop=stop)
    assert set(plan.remove) >= {w.worker_id for w in current if w.worker_id in stop}
    applied = [w for w in current if w.worker_id not in plan.remove] + [
        CurrentWorker(worker_id=w, endpoint_id=e) for e, ws in plan.add.items() for w in ws
    ]
    counts = Counter(w.endpoint_id for w in applied)
    assert counts == Counter({e: n for e, n in desired.items() if n})
    again = plan_reconcile(current=applied, desired=desired, new_ids=iter(()), stop=stop)
    assert again.empty


# ---------------------------------------------------------------- examples


def test_gpu_count_two_lands_both_gpus_on_one_host() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("a", _gpus("a", "H100-80GB", 2), in_use=["GPU-a-0"]),
            _node("b", _gpus("b", "H100-80GB", 2), in_use=["GPU-b-1"]),
            _node("c", _gpus("c", "H100-80GB", 4), in_use=["GPU-c-0", "GPU-c-2"]),
        ]
    )
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["H100-80GB"], gpu_count=2)])
    [a] = plan.assignments
    assert (a.node_id, a.devices) == ("c", ["GPU-c-1", "GPU-c-3"])


def test_falls_back_to_second_type_only_when_first_is_full() -> None:
    snapshot = ClusterSnapshot(
        nodes=[_node("h", _gpus("h", "H100-80GB", 1)), _node("a", _gpus("a", "A100-80GB", 4))]
    )
    plan = plan_placement(snapshot, [_request("ep", 3, gpu_type_ids=["H100-80GB", "A100-80GB"])])
    assert [(a.worker_id, a.gpu_type) for a in plan.assignments] == [
        ("ep-w0", "H100-80GB"),
        ("ep-w1", "A100-80GB"),
        ("ep-w2", "A100-80GB"),
    ]


def test_reason_names_type_data_center_and_counts_when_nothing_fits() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("eu", _gpus("eu", "A100-80GB", 8), dc="EU-RO-1"),
            _node("us", _gpus("us", "H100-80GB", 8), dc="US-TX-3"),
        ]
    )
    request = _request("ep", 2, gpu_type_ids=["H100-80GB"], data_center_ids=["EU-RO-1"])
    plan = plan_placement(snapshot, [request])
    assert plan.assignments == []
    assert plan.unplaced == {"ep": ["ep-w0", "ep-w1"]}
    assert plan.reasons == {"ep": "no free H100-80GB in EU-RO-1 (2 requested, 0 free)"}


def test_reason_tells_fragmentation_and_every_priority_tried() -> None:
    snapshot = ClusterSnapshot(
        nodes=[_node(n, _gpus(n, "H100-80GB", 2), in_use=[f"GPU-{n}-0"]) for n in ("a", "b", "c")]
    )
    request = _request("ep", 1, gpu_type_ids=["H100-80GB", "mig-24gb"], gpu_count=2)
    plan = plan_placement(snapshot, [request])
    assert plan.reasons["ep"] == (
        "no host with 2 free H100-80GB in any data center (2 requested, 3 free, at most 1 on one host); "
        "mig-24gb is a MIG slice but gpuCount 2 needs whole GPUs"
    )


def test_runpod_names_alias_canonical_types() -> None:
    snapshot = ClusterSnapshot(nodes=[_node("h", _gpus("h", "H100-80GB", 1))])
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["NVIDIA H100 80GB HBM3"])])
    assert plan.assignments[0].gpu_type == "H100-80GB"
    assert canonical_gpu_type("nvidia h100 80gb hbm3") == "H100-80GB"
    assert canonical_gpu_type("Custom-GPU") == "Custom-GPU"


def test_prefers_flashboot_then_image_holders_then_packs_fullest_host() -> None:
    nodes = [
        _node("empty", _gpus("empty", "H100-80GB", 8)),
        _node("full", _gpus("full", "H100-80GB", 8), in_use=[f"GPU-full-{i}" for i in range(6)]),
        _node("image", _gpus("image", "H100-80GB", 8), images=["img"]),
        _node("snap", _gpus("snap", "H100-80GB", 8), flashboot_endpoints=["ep"]),
    ]
    snapshot = ClusterSnapshot(nodes=nodes)
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["H100-80GB"])])
    assert plan.assignments[0].node_id == "snap"
    nodes[3] = _node("snap", _gpus("snap", "H100-80GB", 8))
    plan = plan_placement(ClusterSnapshot(nodes=nodes), [_request("ep", 1, gpu_type_ids=["H100-80GB"])])
    assert plan.assignments[0].node_id == "image"
    plan = plan_placement(ClusterSnapshot(nodes=nodes), [_request("ep", 3, image="other")])
    assert [a.node_id for a in plan.assignments] == ["full", "full", "empty"]


def test_skips_draining_and_lost_hosts() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("d", _gpus("d", "H100-80GB", 8), draining=True),
            _node("l", _gpus("l", "H100-80GB", 8), lost=True),
        ]
    )
    plan = plan_placement(snapshot, [_request("ep", 1)])
    assert plan.assignments == []
    assert plan.reasons == {"ep": "no free GPU of any type in any data center (1 requested, 0 free)"}


def test_mig_profile_uses_a_free_instance_and_memory_class_the_smallest_fit() -> None:
    card = _mig_card("m", 0, ["1g.10gb", "2g.20gb", "3g.40gb", "3g.40gb"], busy=0)
    snapshot = ClusterSnapshot(nodes=[_node("m", [card], in_use=["MIG-m-0-2"])])
    plan = plan_placement(
        snapshot,
        [
            _request("p", 1, gpu_type_ids=["NVIDIA H100 80GB HBM3:3g.40gb"]),
            _request("c", 2, gpu_type_ids=["mig-15gb"]),
        ],
    )
    assert [(a.worker_id, a.devices, a.price_key) for a in plan.assignments] == [
        ("p-w0", ["MIG-m-0-3"], "H100-80GB:3g.40gb"),
        ("c-w0", ["MIG-m-0-1"], "H100-80GB:2g.20gb"),
    ]
    assert plan.reasons == {
        "c": "no free MIG slice of at least 15 GB in any data center (1 requested, 0 free) "
        "and no MIG card can be re-cut to fit it"
    }


class _FitEmptyCards:
    """A stand-in fitter: a card can be re-cut when no instance on it is in use."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None:
        self.calls.append(gpu.uuid)
        if in_use:
            return None
        return need.profile or "1g.24gb"


def test_slice_fitter_reserves_a_recut_card_once_and_hides_its_instances() -> None:
    busy_card = _mig_card("m", 0, ["1g.10gb"], busy=1)
    idle_card = _mig_card("m", 1, ["1g.10gb", "1g.10gb"])
    snapshot = ClusterSnapshot(nodes=[_node("m", [busy_card, idle_card], revision=7)])
    fitter = _FitEmptyCards()
    requests = [
        _request("big", 2, gpu_type_ids=["H100-80GB:3g.40gb"]),
        _request("small", 1, gpu_type_ids=["H100-80GB:1g.10gb"]),
    ]
    plan = plan_placement(snapshot, requests, slice_fitter=fitter)
    assert [(r.worker_id, r.gpu_uuid, r.profile) for r in plan.recuts] == [("big-w0", "GPU-m-1", "3g.40gb")]
    assert plan.unplaced == {"big": ["big-w1"], "small": ["small-w0"]}
    assert plan.node_revisions == {"m": 7}
    # The second "big" worker scanned both cards once; "small" found no free instance
    # (the idle card is reserved) and its own scan found no card to re-cut.
    assert fitter.calls == ["GPU-m-0", "GPU-m-1", "GPU-m-0", "GPU-m-0"]


class _FitAnything:
    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None:
        return "3g.40gb"


def test_recut_card_may_keep_busy_instances_but_gives_out_none_of_its_idle_ones() -> None:
    card = _mig_card("m", 0, ["1g.10gb", "1g.10gb"], busy=1)
    snapshot = ClusterSnapshot(nodes=[_node("m", [card])])
    requests = [
        _request("big", 1, gpu_type_ids=["H100-80GB:3g.40gb"]),
        _request("small", 1, gpu_type_ids=["H100-80GB:1g.10gb"]),
    ]
    plan = plan_placement(snapshot, requests, slice_fitter=_FitAnything())
    assert [r.worker_id for r in plan.recuts] == ["big-w0"]
    assert plan.assignments == []
    assert plan.unplaced == {"small": ["small-w0"]}


def test_default_fitter_says_no_and_mig_needs_skip_for_multi_gpu_workers() -> None:
    snapshot = ClusterSnapshot(nodes=[_node("m", [_mig_card("m", 0, [])])])
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["H100-80GB:1g.10gb"])])
    assert plan.recuts == []
    assert plan.unplaced == {"ep": ["ep-w0"]}


def test_parse_gpu_type_ids() -> None:
    assert parse_gpu_type_id("mig-24GB") == GpuNeed(kind="mig-class", label="mig-24gb", min_memory_gb=24)
    assert parse_gpu_type_id(" NVIDIA H200:3g.71gb ") == GpuNeed(
        kind="mig", label="H200-141GB:3g.71gb", type_id="H200-141GB", profile="3g.71gb"
    )
    assert parse_gpu_type_id("L40S-48GB").kind == "gpu"


def test_reconcile_removes_stopped_deleted_and_newest_surplus() -> None:
    current = [
        CurrentWorker(worker_id="a1", endpoint_id="a"),
        CurrentWorker(worker_id="a2", endpoint_id="a"),
        CurrentWorker(worker_id="a3", endpoint_id="a"),
        CurrentWorker(worker_id="x1", endpoint_id="deleted"),
        CurrentWorker(worker_id="b1", endpoint_id="b"),
    ]
    plan = plan_reconcile(current=current, desired={"a": 1, "b": 2}, new_ids=["n1", "n2"], stop={"b1"})
    assert plan.remove == ["x1", "b1", "a3", "a2"]
    assert plan.add == {"b": ["n1", "n2"]}


def test_reconcile_rejects_bad_input() -> None:
    current = [CurrentWorker(worker_id="a1", endpoint_id="a")]
    with pytest.raises(InvalidArgument, match="ran out"):
        plan_reconcile(current=current, desired={"a": 3}, new_ids=["n1"])
    with pytest.raises(InvalidArgument, match="already in use"):
        plan_reconcile(current=current, desired={"a": 2}, new_ids=["a1"])
    with pytest.raises(InvalidArgument, match=">= 0"):
        plan_reconcile(current=current, desired={"a": -1}, new_ids=[])
