"""B300 end to end without hardware: the simulator's spec, noded's inventory, the placer (8 x B300 behind
one worker, as large-model endpoints ask) and a MIG cut applied on a simulated card."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.scheduling import ClusterSnapshot, NodeSnapshot, PlacementRequest, plan_placement
from mig import (
    Layout,
    SimulatedMigBackend,
    Transition,
    apply_transition,
    list_instances,
    load_catalog,
    parse_gpu_spec,
    plan_layout,
    plan_transition,
)
from noded.inventory import SimulatedGpus
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import NodeInventory

B300 = "B300-269GB"


def _host(spec: str, node_id: str = "b300-host") -> NodeSnapshot:
    gpus = asyncio.run(SimulatedGpus.from_spec(spec, seed=3).list_gpus())
    return NodeSnapshot(node_id=node_id, inventory=NodeInventory(hostname=node_id, gpus=gpus))


def _request(n: int, gpu_count: int, type_ids: list[str]) -> PlacementRequest:
    spec = EndpointSpec(name="big", image="img", gpu_type_ids=type_ids, gpu_count=gpu_count)
    return PlacementRequest(endpoint_id="big", spec=spec, worker_ids=[f"big-w{i}" for i in range(n)])


def test_spec_accepts_the_canonical_id_and_the_marketing_size() -> None:
    assert parse_gpu_spec("8xB300-288GB") == parse_gpu_spec(f"8x{B300}")
    assert [g.type_id for g in parse_gpu_spec("2xb300-288gb:mig")] == [B300, B300]


def test_simulated_b300_looks_like_nvml_says() -> None:
    sim = SimulatedMigBackend.from_spec(f"8x{B300}")
    devices = sim.list_gpus()
    assert len(devices) == 8 and len({d.uuid for d in devices}) == 8
    assert {(d.name, d.memory_mb, d.mig_capable) for d in devices} == {("NVIDIA B300 SXM6 AC", 275040, True)}


@pytest.mark.parametrize("type_id", [B300, "NVIDIA B300 SXM6 AC", "B300-288GB"])
def test_eight_b300_behind_one_worker(type_id: str) -> None:
    host = _host(f"8x{B300}")
    assert {g.type_id for g in host.inventory.gpus} == {B300}
    snapshot = ClusterSnapshot(nodes=[_host("8xB200-180GB", "b200-host"), host])
    plan = plan_placement(snapshot, [_request(1, 8, [type_id])])
    [a] = plan.assignments
    assert (a.node_id, a.gpu_type, a.mig_profile) == ("b300-host", B300, "")
    assert sorted(a.devices) == sorted(g.uuid for g in host.inventory.gpus)


def test_a_second_eight_gpu_worker_waits_and_says_why() -> None:
    host = _host(f"8x{B300}")
    plan = plan_placement(ClusterSnapshot(nodes=[host]), [_request(2, 8, ["NVIDIA B300 SXM6 AC"])])
    assert [a.worker_id for a in plan.assignments] == ["big-w0"]
    assert plan.unplaced == {"big": ["big-w1"]}
    assert B300 in plan.reasons["big"]


def test_seven_free_b300s_do_not_take_an_eight_gpu_worker() -> None:
    host = _host(f"8x{B300}")
    busy = NodeSnapshot(node_id=host.node_id, inventory=host.inventory, in_use=[host.inventory.gpus[0].uuid])
    plan = plan_placement(ClusterSnapshot(nodes=[busy]), [_request(1, 8, [B300])])
    assert plan.assignments == [] and B300 in plan.reasons["big"]


def test_nvidias_balanced_b300_cut_applies_on_the_simulator() -> None:
    cat = load_catalog(B300)
    sim = SimulatedMigBackend.from_spec(f"1x{B300}:mig")
    [gpu] = sim.list_gpus()
    layout = plan_layout(cat, [], ["1g.34gb", "1g.34gb", "2g.67gb", "3g.135gb"])
    assert isinstance(layout, Layout)
    step = plan_transition([], layout)
    assert isinstance(step, Transition)
    live = apply_transition(sim, gpu.uuid, step)
    assert live == list_instances(sim, gpu.uuid)
    assert sorted((i.profile, i.start) for i in live) == sorted((s.profile, s.start) for s in layout.slots)
    assert sum(cat.profile(i.profile).memory_mb for i in live) <= cat.memory_mb
