"""One contract suite for MigBackend.

Runs against:
* ``simulator``: SimulatedMigBackend, always;
* ``nvml-fake``: the real NvmlMigBackend and real pynvml wrappers over a fake libnvidia-ml
  (tests/mig/_fake_libnvml.py) backed by the simulator, always;
* ``nvml``: NvmlMigBackend on the host's GPUs, only when NVML finds one, and then read-only:
  tests that change MIG state skip on real hardware (never toggle MIG on a real GPU in tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mig import (
    Layout,
    MigBackend,
    NvmlMigBackend,
    SimulatedMigBackend,
    Transition,
    apply_transition,
    catalog_for_name,
    create_instance,
    list_instances,
    load_catalog,
    plan_layout,
    plan_transition,
)
from tests.mig._fake_libnvml import install
from tide.api.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable

SPEC = "1xA100-40GB:mig,1xH100-80GB:mig,1xRTXPRO6000-96GB,1xL40S-48GB"


@dataclass
class Rig:
    backend: MigBackend
    sim: SimulatedMigBackend | None  # test controls; None on real hardware

    def mutable(self) -> SimulatedMigBackend:
        if self.sim is None:
            pytest.skip("changes MIG state: never on a real GPU")
        return self.sim

    def gpu(self, type_id: str) -> str:
        for d in self.backend.list_gpus():
            if catalog_for_name(d.name) == type_id:
                return d.uuid
        raise AssertionError(f"no {type_id} in the rig")


@pytest.fixture(params=["simulator", "nvml-fake", pytest.param("nvml", marks=pytest.mark.gpu)])
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    if request.param == "simulator":
        sim = SimulatedMigBackend.from_spec(SPEC, seed=7)
        yield Rig(sim, sim)
    elif request.param == "nvml-fake":
        sim = SimulatedMigBackend.from_spec(SPEC, seed=7)
        install(monkeypatch, sim)
        with NvmlMigBackend() as backend:
            yield Rig(backend, sim)
    else:
        try:
            backend = NvmlMigBackend()
        except Unavailable:
            pytest.skip("no NVML on this host")
        with backend:
            if not backend.list_gpus():
                pytest.skip("NVML finds no GPU")
            yield Rig(backend, None)


def _mig_on(rig: Rig) -> list[str]:
    out = []
    for d in rig.backend.list_gpus():
        if d.mig_capable and rig.backend.get_mig_mode(d.uuid).current:
            out.append(d.uuid)
    return out


# -- read-only: every backend, real hardware included ----------------------------------------


def test_list_gpus_names_each_card_once(rig: Rig) -> None:
    gpus = rig.backend.list_gpus()
    assert gpus
    assert len({g.uuid for g in gpus}) == len({g.index for g in gpus}) == len(gpus)
    assert all(g.uuid.startswith("GPU-") and g.memory_mb > 0 and g.name for g in gpus)


def test_mig_mode_is_readable_on_capable_cards_only(rig: Rig) -> None:
    for g in rig.backend.list_gpus():
        if g.mig_capable:
            mode = rig.backend.get_mig_mode(g.uuid)
            assert mode.reset_needed == (mode.current != mode.pending)
        else:
            with pytest.raises(FailedPrecondition):
                rig.backend.get_mig_mode(g.uuid)


def test_unknown_gpu_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        rig.backend.get_mig_mode("GPU-00000000-0000-4000-8000-000000000000")


def test_profiles_and_placements_agree_with_the_catalog(rig: Rig) -> None:
    """Conformance: on hardware this compares the shipped catalog with the driver."""
    for uuid in _mig_on(rig):
        name = next(g.name for g in rig.backend.list_gpus() if g.uuid == uuid)
        profiles = rig.backend.gi_profiles(uuid)
        assert profiles and len({p.profile_id for p in profiles}) == len(profiles)
        type_id = catalog_for_name(name)
        if type_id is None:
            continue
        cat = load_catalog(type_id)
        for p in profiles:
            placements = rig.backend.possible_placements(uuid, p.profile_id)
            assert all(pl.start >= 0 and pl.end <= cat.grid for pl in placements)
            if cat.has_profile(p.name) and not cat.profile(p.name).inferred:
                want = cat.profile(p.name)
                assert (p.profile_id, p.instance_count) == (want.profile_id, want.max_count)
                assert tuple(placements) == want.placements


def test_live_instances_are_consistent(rig: Rig) -> None:
    for uuid in _mig_on(rig):
        gis = rig.backend.list_gpu_instances(uuid)
        units: set[int] = set()
        for gi in gis:
            assert gi.placement in rig.backend.possible_placements(uuid, gi.profile_id)
            span = set(range(gi.placement.start, gi.placement.end))
            assert not span & units, "GPU instances overlap"
            units |= span
        devices = rig.backend.list_mig_devices(uuid)
        assert {d.gi_id for d in devices} <= {gi.gi_id for gi in gis}
        assert len({d.index for d in devices}) == len(devices)
        assert all(d.uuid.startswith("MIG-") for d in devices)
        for gi in gis:
            assert rig.backend.remaining_capacity(uuid, gi.profile_id) >= 0


# -- changes MIG state: simulator and fake NVML only -----------------------------------------


def test_instance_lifecycle_and_in_use_rules(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("H100-80GB")
    gi = b.create_gpu_instance(gpu, 9, 4)  # 3g.40gb at 4
    assert (gi.profile, gi.placement.start, gi.placement.size) == ("3g.40gb", 4, 4)
    ci = b.create_compute_instance(gpu, gi.gi_id)
    [dev] = b.list_mig_devices(gpu)
    assert (dev.gi_id, dev.ci_id) == (gi.gi_id, ci.ci_id)
    assert dev.memory_mb == load_catalog("H100-80GB").profile("3g.40gb").memory_mb
    with pytest.raises(FailedPrecondition):
        b.destroy_gpu_instance(gpu, gi.gi_id)  # IN_USE: it still has a compute instance
    b.destroy_compute_instance(gpu, gi.gi_id, ci.ci_id)
    b.destroy_gpu_instance(gpu, gi.gi_id)
    assert b.list_gpu_instances(gpu) == [] and b.list_mig_devices(gpu) == []
    with pytest.raises(NotFound):
        b.destroy_gpu_instance(gpu, gi.gi_id)


def test_create_rejects_illegal_overlapping_and_capped_placements(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("A100-40GB")
    with pytest.raises(InvalidArgument):
        b.create_gpu_instance(gpu, 9, 2)  # 3g starts only at 0 or 4
    b.create_gpu_instance(gpu, 14, 2)  # 2g.10gb at 2
    with pytest.raises(ResourceExhausted):
        b.create_gpu_instance(gpu, 9, 0)  # overlaps the 2g
    b.create_gpu_instance(gpu, 20, 0)  # 1g.5gb+me
    with pytest.raises(ResourceExhausted):
        b.create_gpu_instance(gpu, 20, 1)  # one +me per card
    assert [g.placement.start for g in b.list_gpu_instances(gpu)] == [0, 2]


def test_busy_instances_cannot_be_destroyed(rig: Rig) -> None:
    sim = rig.mutable()
    b, gpu = rig.backend, rig.gpu("H100-80GB")
    inst = create_instance(b, gpu, "2g.20gb", 0)
    sim.attach_process(gpu, 4242, inst.uuid)
    [seen] = list_instances(b, gpu)
    assert seen.busy and seen.uuid == inst.uuid
    with pytest.raises(FailedPrecondition):
        b.destroy_compute_instance(gpu, inst.gpu_instance_id, inst.compute_instance_id)
    sim.detach_process(gpu, 4242)
    b.destroy_compute_instance(gpu, inst.gpu_instance_id, inst.compute_instance_id)


def test_mig_device_indices_are_sparse_and_uuids_fresh(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("H100-80GB")
    made = [create_instance(b, gpu, "1g.10gb", s) for s in (0, 1, 2)]
    middle = made[1]
    b.destroy_compute_instance(gpu, middle.gpu_instance_id, middle.compute_instance_id)
    b.destroy_gpu_instance(gpu, middle.gpu_instance_id)
    indices = [d.index for d in b.list_mig_devices(gpu)]
    assert len(indices) == 2 and max(indices) > 1  # a hole where the middle one was
    again = create_instance(b, gpu, "1g.10gb", 1)
    assert again.uuid not in {m.uuid for m in made}


def test_remaining_capacity_counts_down(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("H100-80GB")
    assert b.remaining_capacity(gpu, 9) == 2
    create_instance(b, gpu, "3g.40gb", 0)
    assert b.remaining_capacity(gpu, 9) == 1
    assert b.remaining_capacity(gpu, 0) == 0  # 7g no longer fits


def test_mig_mode_round_trip_on_a_resetless_card(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("RTXPRO6000-96GB")
    with pytest.raises(FailedPrecondition):
        b.list_gpu_instances(gpu)  # MIG is off
    assert b.set_mig_mode(gpu, True).current
    assert b.set_mig_mode(gpu, True).current  # idempotent
    create_instance(b, gpu, "2g.48gb", 6)
    with pytest.raises(FailedPrecondition):
        b.set_mig_mode(gpu, False)  # instances first
    [inst] = list_instances(b, gpu)
    assert (inst.start, inst.size) == (6, 6)


def test_lost_gpu_is_unavailable_and_left_out(rig: Rig) -> None:
    sim = rig.mutable()
    gpu = rig.gpu("H100-80GB")
    sim.lose_gpu(gpu)
    assert gpu not in {g.uuid for g in rig.backend.list_gpus()}
    with pytest.raises(Unavailable):
        rig.backend.list_gpu_instances(gpu)


def test_plan_apply_replan_is_empty(rig: Rig) -> None:
    rig.mutable()
    b, gpu = rig.backend, rig.gpu("A100-40GB")
    cat = load_catalog("A100-40GB")
    wanted = ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]  # NVIDIA's 19,19,14,9
    layout = plan_layout(cat, list_instances(b, gpu), wanted)
    assert isinstance(layout, Layout)
    transition = plan_transition(list_instances(b, gpu), layout)
    assert isinstance(transition, Transition)
    after = apply_transition(b, gpu, transition)
    assert sorted(i.profile for i in after) == sorted(wanted)
    relayout = plan_layout(cat, after, wanted)
    assert isinstance(relayout, Layout)
    assert plan_transition(after, relayout) == Transition()
