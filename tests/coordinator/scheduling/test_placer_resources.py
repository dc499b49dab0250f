"""The placer against host CPU and RAM: endpoints' ``cpus`` / ``memoryMb`` never oversubscribe a host."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduling import (
    ClusterSnapshot,
    NodeSnapshot,
    PlacementPlan,
    PlacementRequest,
    plan_placement,
)
from coordinator.scheduling._resources import HOST_RESERVE_MEMORY_MB, host_reserve
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, MigInstance, NodeInventory

DCS = ["EU-RO-1", "US-TX-3"]
TYPES = ["H100-80GB", "A100-80GB"]
GIB_MB = 1024


# ----------------------------------------------------------------- builders


def _node(
    node_id: str,
    gpus: int | list[GpuInfo],
    *,
    cpus: int = 0,
    memory_mb: int = 0,
    dc: str = "EU-RO-1",
    type_id: str = "H100-80GB",
    **kw: Any,
) -> NodeSnapshot:
    if isinstance(gpus, int):
        gpus = [GpuInfo(index=i, uuid=f"GPU-{node_id}-{i}", type_id=type_id) for i in range(gpus)]
    inventory = NodeInventory(
        hostname=f"host-{node_id}",
        datacenter=dc,
        gpus=gpus,
        cpus=cpus,
        memory_bytes=memory_mb << 20,
        images=kw.pop("images", []),
    )
    return NodeSnapshot(node_id=node_id, inventory=inventory, **kw)


def _request(endpoint_id: str, n: int, **spec: Any) -> PlacementRequest:
    spec.setdefault("image", "img")
    return PlacementRequest(
        endpoint_id=endpoint_id,
        spec=EndpointSpec(name=endpoint_id, **spec),
        worker_ids=[f"{endpoint_id}-w{i}" for i in range(n)],
    )


def _mig_card(node_id: str, index: int, profiles: list[str]) -> GpuInfo:
    instances = [
        MigInstance(uuid=f"MIG-{node_id}-{index}-{k}", profile=p, start=k, size=1)
        for k, p in enumerate(profiles)
    ]
    return GpuInfo(
        index=index,
        uuid=f"GPU-{node_id}-{index}",
        type_id="H100-80GB",
        mig_capable=True,
        mig_enabled=True,
        mig_instances=instances,
    )


def _allocatable(node: NodeSnapshot) -> tuple[int | None, int | None]:
    """(millicores, MiB) the workers of this host may ask for in all; None = unconstrained."""
    inv = node.inventory
    memory_mb = inv.memory_bytes >> 20
    reserve = host_reserve(inv.cpus, memory_mb)
    return (
        inv.cpus * 1000 - reserve.millicpus if inv.cpus else None,
        memory_mb - reserve.memory_mb if memory_mb else None,
    )


def _strip_asks(requests: list[PlacementRequest]) -> list[PlacementRequest]:
    return [
        msgspec.structs.replace(r, spec=msgspec.structs.replace(r.spec, cpus=0.0, memory_mb=0))
        for r in requests
    ]


def _unconstrained(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    nodes = [
        msgspec.structs.replace(
            n, inventory=msgspec.structs.replace(n.inventory, cpus=0, memory_bytes=0), requested_cpus=0.0
        )
        for n in snapshot.nodes
    ]
    return ClusterSnapshot(nodes=nodes, revision=snapshot.revision)


# ------------------------------------------------------------- strategies

CPU_ASKS = [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 12.5]
MEMORY_ASKS = [0, 0, 512, 4 * GIB_MB, 16 * GIB_MB, 64 * GIB_MB]


@st.composite
def snapshots(draw: st.DrawFn) -> ClusterSnapshot:
    nodes = []
    for n in range(draw(st.integers(0, 8))):
        node_id = f"n{n}"
        gpus: list[GpuInfo] = []
        for index in range(draw(st.integers(0, 8))):
            if draw(st.integers(0, 5)) == 0:
                gpus.append(
                    _mig_card(
                        node_id, index, draw(st.lists(st.sampled_from(["1g.10gb", "3g.40gb"]), max_size=3))
                    )
                )
            else:
                type_id = draw(st.sampled_from(TYPES))
                gpus.append(GpuInfo(index=index, uuid=f"GPU-{node_id}-{index}", type_id=type_id))
        every = [g.uuid for g in gpus if not g.mig_enabled] + [m.uuid for g in gpus for m in g.mig_instances]
        nodes.append(
            _node(
                node_id,
                gpus,
                cpus=draw(st.sampled_from([0, 2, 8, 16, 32, 128])),
                memory_mb=draw(st.sampled_from([0, 4 * GIB_MB, 24 * GIB_MB, 256 * GIB_MB, 2048 * GIB_MB])),
                dc=draw(st.sampled_from(DCS)),
                draining=draw(st.integers(0, 9)) == 0,
                in_use=draw(st.lists(st.sampled_from(every), unique=True)) if every else [],
                images=draw(st.sampled_from([[], ["img-a"]])),
                flashboot_endpoints=draw(st.sampled_from([[], ["e0"]])),
                # Workers already here may have asked for more than the host has (asks raised).
                requested_cpus=draw(st.sampled_from([0.0, 0.5, 4.0, 30.0, 200.0])),
                requested_memory_mb=draw(st.sampled_from([0, 1024, 100 * GIB_MB, 4096 * GIB_MB])),
                revision=n + 10,
            )
        )
    return ClusterSnapshot(nodes=nodes, revision=draw(st.integers(0, 100)))


def _spec(draw: st.DrawFn) -> dict[str, Any]:
    entries = [*TYPES, "H100-80GB:1g.10gb", "mig-20gb"]
    return {
        "image": draw(st.sampled_from(["img-a", "img-b"])),
        "gpu_type_ids": draw(st.lists(st.sampled_from(entries), max_size=2, unique=True)),
        "gpu_count": draw(st.sampled_from([1, 1, 2, 4, 8])),
        "data_center_ids": draw(st.lists(st.sampled_from(DCS), max_size=1)),
        "cpus": draw(st.sampled_from(CPU_ASKS)),
        "memory_mb": draw(st.sampled_from(MEMORY_ASKS)),
    }


@st.composite
def request_lists(draw: st.DrawFn) -> list[PlacementRequest]:
    return [_request(f"e{e}", draw(st.integers(1, 8)), **_spec(draw)) for e in range(draw(st.integers(1, 4)))]


@st.composite
def single_requests(draw: st.DrawFn) -> PlacementRequest:
    return _request("e0", 1, **_spec(draw))


class _FitIdleCards:
    """Re-cut any card with no instance in use."""

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: Any) -> str | None:
        return None if in_use else (need.profile or "1g.24gb")


# ------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(snapshots(), request_lists())
def test_never_oversubscribes_cpu_or_ram(snapshot: ClusterSnapshot, requests: list[PlacementRequest]) -> None:
    plan = plan_placement(snapshot, requests, slice_fitter=_FitIdleCards())
    spec_of = {r.endpoint_id: r.spec for r in requests}
    added: dict[str, list[float]] = {}  # node -> [cpus, memory_mb] asked by this plan's workers
    placed = [(a.endpoint_id, a.node_id) for a in plan.assignments]
    placed += [(r.endpoint_id, r.node_id) for r in plan.recuts]  # a re-cut's worker is charged at once
    for endpoint_id, node_id in placed:
        spec = spec_of[endpoint_id]
        sums = added.setdefault(node_id, [0.0, 0.0])
        sums[0] += spec.cpus
        sums[1] += spec.memory_mb
    for node in snapshot.nodes:
        cpus, memory_mb = _allocatable(node)
        new_cpus, new_memory = added.get(node.node_id, [0.0, 0.0])
        if cpus is not None and new_cpus:
            assert (node.requested_cpus + new_cpus) * 1000 <= cpus + 1e-6, node.node_id
        if memory_mb is not None and new_memory:
            assert node.requested_memory_mb + new_memory <= memory_mb, node.node_id
    placed_ids = [a.worker_id for a in plan.assignments] + [r.worker_id for r in plan.recuts]
    placed_ids += [w for ws in plan.unplaced.values() for w in ws]
    assert sorted(placed_ids) == sorted(w for r in requests for w in r.worker_ids)
    assert set(plan.reasons) == set(plan.unplaced)
    assert plan_placement(snapshot, requests, slice_fitter=_FitIdleCards()) == plan  # deterministic


@settings(max_examples=300, deadline=None)
@given(snapshots(), single_requests())
def test_one_worker_goes_where_the_old_placer_would_among_hosts_with_room(
    snapshot: ClusterSnapshot, request: PlacementRequest
) -> None:
    """Feasible => placed, on the host the GPU-only rules pick among the hosts with CPU/RAM room."""
    spec = request.spec
    roomy = []
    for node in snapshot.nodes:
        cpus, memory_mb = _allocatable(node)
        cpu_ok = not spec.cpus or cpus is None or node.requested_cpus * 1000 + spec.cpus * 1000 <= cpus
        memory_ok = (
            not spec.memory_mb or memory_mb is None or node.requested_memory_mb + spec.memory_mb <= memory_mb
        )
        if cpu_ok and memory_ok:
            roomy.append(node)
    expected = plan_placement(
        ClusterSnapshot(nodes=roomy, revision=snapshot.revision), _strip_asks([request])
    )
    plan = plan_placement(snapshot, [request])
    assert plan.assignments == expected.assignments
    assert plan.unplaced == expected.unplaced
    assert plan.node_revisions == expected.node_revisions


@settings(max_examples=200, deadline=None)
@given(snapshots(), request_lists())
def test_unconstrained_hosts_and_askless_endpoints_place_exactly_as_before(
    snapshot: ClusterSnapshot, requests: list[PlacementRequest]
) -> None:
    free = _unconstrained(snapshot)
    # Hosts that report no CPUs or memory: asks change nothing, not even the reasons.
    assert plan_placement(free, requests) == plan_placement(free, _strip_asks(requests))
    # Endpoints that ask for nothing: the hosts' CPUs, memory and current asks change nothing.
    assert plan_placement(snapshot, _strip_asks(requests)) == plan_placement(free, _strip_asks(requests))


# ---------------------------------------------------------------- examples


def test_host_reserve_keeps_whole_cpus_on_big_hosts_and_some_ram_everywhere() -> None:
    assert host_reserve(2, 24 * GIB_MB) == (0, HOST_RESERVE_MEMORY_MB)  # a CI runner keeps its CPUs
    assert host_reserve(16, 64 * GIB_MB) == (1000, 2 * GIB_MB)
    assert host_reserve(128, 2048 * GIB_MB) == (8000, 64 * GIB_MB)  # 1/32 of RAM beats 2 GiB
    assert host_reserve(4, 4 * GIB_MB) == (0, 1 * GIB_MB)  # never more than a quarter of a small host


def test_cpu_bound_host_is_skipped_for_the_next_fullest_with_room() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            # Fullest by GPUs, but its 16 CPUs (1 reserved) are mostly taken.
            _node(
                "busy",
                8,
                cpus=16,
                memory_mb=256 * GIB_MB,
                in_use=[f"GPU-busy-{i}" for i in range(6)],
                requested_cpus=12.0,
            ),
            _node("half", 8, cpus=16, memory_mb=256 * GIB_MB, in_use=[f"GPU-half-{i}" for i in range(4)]),
            _node("empty", 8, cpus=16, memory_mb=256 * GIB_MB),
        ]
    )
    plan = plan_placement(snapshot, [_request("ep", 3, gpu_type_ids=["H100-80GB"], cpus=4)])
    # busy has 3 CPUs free: none of the workers fit there; half takes them while its CPUs last.
    assert [a.node_id for a in plan.assignments] == ["half", "half", "half"]
    plan = plan_placement(snapshot, [_request("ep", 4, gpu_type_ids=["H100-80GB"], cpus=4)])
    assert [a.node_id for a in plan.assignments] == ["half", "half", "half", "empty"]
    # A worker that asks for nothing still packs onto the fullest host.
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["H100-80GB"])])
    assert [a.node_id for a in plan.assignments] == ["busy"]


def test_fractional_cpus_add_up_exactly() -> None:
    snapshot = ClusterSnapshot(nodes=[_node("a", 8, cpus=2)])
    plan = plan_placement(snapshot, [_request("ep", 5, cpus=0.4)])
    assert len(plan.assignments) == 5  # 5 x 0.4 = 2.0 CPUs, the whole (reserve-free) host
    plan = plan_placement(snapshot, [_request("ep", 7, cpus=0.3)])
    assert len(plan.assignments) == 6 and plan.unplaced == {"ep": ["ep-w6"]}


def test_reason_names_the_asks_the_devices_and_the_best_host() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("a", 8, cpus=5, memory_mb=200_000),
            _node("b", 8, cpus=2, memory_mb=400_000, requested_cpus=1.5),
            _node("c", 1, cpus=64, memory_mb=2_000_000, type_id="A100-80GB"),
        ]
    )
    request = _request("ep", 2, gpu_type_ids=["H100-80GB"], cpus=8, memory_mb=32768)
    plan = plan_placement(snapshot, [request])
    assert plan.unplaced == {"ep": ["ep-w0", "ep-w1"]}
    assert plan.reasons == {
        "ep": "no host in any data center has 8 free CPUs and 32768 MB free RAM with 1xH100-80GB free "
        "(2 requested); best: host-a 5 CPUs / 193750 MB free"
    }


def test_reason_for_one_dimension_and_every_priority_tried() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("a", 8, memory_mb=64 * GIB_MB, requested_memory_mb=60 * GIB_MB),
            _node("m", [_mig_card("m", 0, ["1g.10gb"])], cpus=4, memory_mb=8 * GIB_MB),
        ]
    )
    request = _request(
        "ep", 1, gpu_type_ids=["H100-80GB", "mig-10gb", "A100-80GB"], gpu_count=2, memory_mb=4096
    )
    plan = plan_placement(snapshot, [request])
    assert plan.reasons["ep"] == (
        "no host in any data center has 4096 MB free RAM with 2xH100-80GB free (1 requested); "
        "best: host-a unlimited CPUs / 2048 MB free; "
        "mig-10gb is a MIG slice but gpuCount 2 needs whole GPUs; "
        "no free A100-80GB in any data center (2 requested, 0 free)"
    )
    request = _request("ep", 1, gpu_type_ids=["mig-10gb"], memory_mb=8 * GIB_MB, data_center_ids=["EU-RO-1"])
    plan = plan_placement(snapshot, [request])
    assert plan.reasons["ep"] == (
        "no host in EU-RO-1 has 8192 MB free RAM with 1xMIG slice of at least 10 GB free (1 requested); "
        "best: host-m 4 CPUs / 6144 MB free"
    )


def test_gpu_shortage_keeps_the_gpu_reason_even_with_asks() -> None:
    snapshot = ClusterSnapshot(nodes=[_node(n, 1, cpus=64, memory_mb=512 * GIB_MB) for n in "ab"])
    plan = plan_placement(snapshot, [_request("ep", 1, gpu_type_ids=["H100-80GB"], gpu_count=2, cpus=1)])
    assert plan.reasons == {
        "ep": "no host with 2 free H100-80GB in any data center (2 requested, 2 free, at most 1 on one host)"
    }


def test_a_recut_is_charged_to_its_host_and_skips_hosts_without_room() -> None:
    snapshot = ClusterSnapshot(
        nodes=[
            _node("tight", [_mig_card("tight", 0, [])], cpus=2),
            _node("roomy", [_mig_card("roomy", 0, []), _mig_card("roomy", 1, [])], cpus=3),
        ]
    )
    request = _request("ep", 3, gpu_type_ids=["H100-80GB:3g.40gb"], cpus=1.5)
    plan = plan_placement(snapshot, [request], slice_fitter=_FitIdleCards())
    assert [(r.worker_id, r.node_id) for r in plan.recuts] == [
        ("ep-w0", "tight"),
        ("ep-w1", "roomy"),
        ("ep-w2", "roomy"),
    ]
    request = _request("ep", 3, gpu_type_ids=["H100-80GB:3g.40gb"], cpus=2.5)
    plan = plan_placement(snapshot, [request], slice_fitter=_FitIdleCards())
    assert [(r.worker_id, r.node_id) for r in plan.recuts] == [("ep-w0", "roomy")]
    assert plan.unplaced == {"ep": ["ep-w1", "ep-w2"]}


def _apply(snapshot: ClusterSnapshot, plan: PlacementPlan, spec: EndpointSpec) -> ClusterSnapshot:
    nodes = []
    for n in snapshot.nodes:
        mine = [a for a in plan.assignments if a.node_id == n.node_id]
        nodes.append(
            msgspec.structs.replace(
                n,
                in_use=[*n.in_use, *(d for a in mine for d in a.devices)],
                requested_cpus=n.requested_cpus + spec.cpus * len(mine),
                requested_memory_mb=n.requested_memory_mb + spec.memory_mb * len(mine),
            )
        )
    return ClusterSnapshot(nodes=nodes, revision=snapshot.revision + 1)


def test_apply_then_replan_places_nothing_more() -> None:
    snapshot = ClusterSnapshot(nodes=[_node(n, 8, cpus=8, memory_mb=64 * GIB_MB) for n in "abc"])
    request = _request("ep", 10, cpus=3, memory_mb=8 * GIB_MB)
    plan = plan_placement(snapshot, [request])
    assert [a.node_id for a in plan.assignments] == ["a", "a", "b", "b", "c", "c"]
    rest = msgspec.structs.replace(request, worker_ids=plan.unplaced["ep"])
    again = plan_placement(_apply(snapshot, plan, request.spec), [rest])
    assert again.assignments == [] and again.unplaced == plan.unplaced


def test_scheduler_snapshot_sums_the_asks_of_the_workers_each_host_keeps() -> None:
    from coordinator._node_schema import NodeRecord, WorkerAssignment
    from coordinator.control._scheduler import Scheduler
    from tide.api.endpoints import Endpoint

    def endpoint(name: str, **spec: Any) -> tuple[Endpoint, int]:
        return Endpoint(id=name, spec=EndpointSpec(name=name, image="img", **spec), created_at=0.0), 1

    class _View:  # the parts of ClusterView the snapshot reads
        revision = 9
        endpoints = {"big": endpoint("big", cpus=2.5, memory_mb=4096), "free": endpoint("free")}
        nodes = {n: (NodeRecord(id=n, inventory=NodeInventory(hostname=n, cpus=32)), 3) for n in ("a", "b")}
        assignments = {
            w: WorkerAssignment(worker_id=w, endpoint_id=ep, node_id=node, devices=[f"GPU-{w}"])
            for w, ep, node in [
                ("w1", "big", "a"),
                ("w2", "big", "a"),
                ("w3", "free", "a"),
                ("w4", "big", "b"),  # being removed: its ask no longer counts
                ("w5", "gone", "b"),  # an endpoint deleted under it
            ]
        }

    class _NoMig:
        def withheld(self, gpus: list[GpuInfo]) -> list[str]:
            return []

    scheduler = Scheduler(None, _View())  # type: ignore[arg-type]
    snapshot = scheduler._snapshot({"w4"}, _NoMig())  # type: ignore[arg-type]
    got = {n.node_id: (n.requested_cpus, n.requested_memory_mb, sorted(n.in_use)) for n in snapshot.nodes}
    assert got == {"a": (5.0, 8192, ["GPU-w1", "GPU-w2", "GPU-w3"]), "b": (0.0, 0, ["GPU-w5"])}
