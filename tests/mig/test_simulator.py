"""SimulatedMigBackend semantics beyond the shared contract (reference/mig.md §6): mode changes and
resets per architecture, reboots, incapable cards, spec parsing, determinism and fault injection."""

from __future__ import annotations

import pytest

from mig import SimGpu, SimulatedMigBackend, create_instance, list_instances, parse_gpu_spec
from tide.api.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


def _one(spec: str) -> tuple[SimulatedMigBackend, str]:
    sim = SimulatedMigBackend.from_spec(spec)
    return sim, sim.list_gpus()[0].uuid


def test_ampere_switches_an_idle_card_at_once() -> None:
    sim, gpu = _one("A100-40GB")
    mode = sim.set_mig_mode(gpu, True)
    assert (mode.current, mode.pending, mode.activation) == (True, True, "ok")


def test_ampere_with_a_process_stays_pending_until_reset() -> None:
    sim, gpu = _one("A100-80GB")
    sim.attach_process(gpu, 99)  # e.g. a DCGM client holding the card
    mode = sim.set_mig_mode(gpu, True)
    assert (mode.current, mode.pending, mode.activation) == (False, True, "in_use")
    assert sim.get_mig_mode(gpu).reset_needed
    with pytest.raises(FailedPrecondition):
        sim.list_gpu_instances(gpu)  # MIG is not on yet
    with pytest.raises(FailedPrecondition):
        sim.reset_gpu(gpu)  # the reset needs an idle card
    sim.detach_process(gpu, 99)
    assert sim.reset_gpu(gpu).current
    assert sim.list_gpu_instances(gpu) == []


def test_pass_through_waits_for_a_reboot() -> None:
    sim, gpu = _one("A100-40GB:passthrough")
    assert sim.set_mig_mode(gpu, True).activation == "reset_required"
    with pytest.raises(FailedPrecondition):
        sim.reset_gpu(gpu)
    sim.reboot()
    assert sim.get_mig_mode(gpu).current


def test_hopper_is_resetless_but_refuses_while_in_use() -> None:
    sim, gpu = _one("H100-80GB")
    sim.attach_process(gpu, 5)
    with pytest.raises(FailedPrecondition, match="IN_USE"):
        sim.set_mig_mode(gpu, True)
    sim.detach_process(gpu, 5)
    assert sim.set_mig_mode(gpu, True).current


def test_reboot_wipes_instances_and_hopper_forgets_the_mode() -> None:
    sim = SimulatedMigBackend.from_spec("A100-40GB:mig,H100-80GB:mig")
    ampere, hopper = (g.uuid for g in sim.list_gpus())
    old = {create_instance(sim, g, p, 0).uuid for g, p in ((ampere, "7g.40gb"), (hopper, "7g.80gb"))}
    sim.reboot()
    assert sim.get_mig_mode(ampere).current and not sim.get_mig_mode(hopper).current
    assert list_instances(sim, ampere) == []
    again = create_instance(sim, ampere, "7g.40gb", 0)
    assert again.uuid not in old  # MIG UUIDs are minted per creation


def test_disabling_needs_an_empty_card() -> None:
    sim, gpu = _one("H200-141GB:mig")
    inst = create_instance(sim, gpu, "3g.71gb", 0)
    with pytest.raises(FailedPrecondition):
        sim.set_mig_mode(gpu, False)
    sim.destroy_compute_instance(gpu, inst.gpu_instance_id, inst.compute_instance_id)
    sim.destroy_gpu_instance(gpu, inst.gpu_instance_id)
    assert not sim.set_mig_mode(gpu, False).current


def test_incapable_cards_have_no_mig() -> None:
    sim, gpu = _one("L40S-48GB")
    [dev] = sim.list_gpus()
    assert (dev.name, dev.memory_mb, dev.mig_capable) == ("NVIDIA L40S", 48 * 1024, False)
    for call in (lambda: sim.get_mig_mode(gpu), lambda: sim.set_mig_mode(gpu, True)):
        with pytest.raises(FailedPrecondition):
            call()
    assert sim.list_mig_devices(gpu) == []


def test_mig_off_refuses_instance_calls_but_placements_are_static() -> None:
    sim, gpu = _one("B200-180GB")
    assert [p.start for p in sim.possible_placements(gpu, 9)] == [0, 4]
    for call in (lambda: sim.gi_profiles(gpu), lambda: sim.create_gpu_instance(gpu, 9, 0)):
        with pytest.raises(FailedPrecondition):
            call()


def test_a_second_compute_instance_does_not_fit() -> None:
    sim, gpu = _one("H100-80GB:mig")
    inst = create_instance(sim, gpu, "2g.20gb", 0)
    with pytest.raises(ResourceExhausted, match="INSUFFICIENT_RESOURCES"):
        sim.create_compute_instance(gpu, inst.gpu_instance_id)


def test_spec_parsing() -> None:
    assert parse_gpu_spec("2xH100-80GB, 1xRTXPRO6000-96GB:mig:passthrough") == [
        SimGpu(type_id="H100-80GB"),
        SimGpu(type_id="H100-80GB"),
        SimGpu(type_id="RTXPRO6000-96GB", mig_enabled=True, passthrough=True),
    ]
    for bad in ("2xH100-80GB:fast", "x", "3y H100", "H100-80G", "2x"):
        with pytest.raises(InvalidArgument):
            parse_gpu_spec(bad)


def test_same_seed_same_uuids() -> None:
    def run(seed: int) -> list[str]:
        sim, gpu = _one_seeded("H100-80GB:mig", seed)
        return [gpu, create_instance(sim, gpu, "1g.10gb", 3).uuid]

    assert run(1) == run(1) != run(2)


def _one_seeded(spec: str, seed: int) -> tuple[SimulatedMigBackend, str]:
    sim = SimulatedMigBackend.from_spec(spec, seed=seed)
    return sim, sim.list_gpus()[0].uuid


def test_fault_injection() -> None:
    slept: list[float] = []
    sim = SimulatedMigBackend([SimGpu(type_id="H100-80GB", mig_enabled=True)], sleep=slept.append)
    gpu = sim.list_gpus()[0].uuid
    sim.fail_next("create_gpu_instance", PermissionDenied("NO_PERMISSION"), times=2)
    for _ in range(2):
        with pytest.raises(PermissionDenied):
            sim.create_gpu_instance(gpu, 0, 0)
    sim.create_gpu_instance(gpu, 0, 0)  # the third call goes through
    sim.set_latency("*", 0.25)
    sim.list_gpu_instances(gpu)
    assert slept == [0.25]
    sim.fail_next("*", Unavailable("TIMEOUT"))
    with pytest.raises(Unavailable):
        sim.list_gpus()
    sim.lose_gpu(gpu)
    assert sim.list_gpus() == []
    with pytest.raises(Unavailable):
        sim.get_mig_mode(gpu)
    sim.reboot()  # a reboot brings it back
    assert [g.uuid for g in sim.list_gpus()] == [gpu]


def test_unknown_ids_are_not_found() -> None:
    sim, gpu = _one("H100-80GB:mig")
    with pytest.raises(NotFound):
        sim.destroy_gpu_instance(gpu, 3)
    with pytest.raises(NotFound):
        sim.attach_process(gpu, 1, "MIG-nope")
    inst = create_instance(sim, gpu, "1g.10gb", 0)
    with pytest.raises(NotFound):
        sim.destroy_compute_instance(gpu, inst.gpu_instance_id, 5)
