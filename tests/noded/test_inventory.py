"""noded.inventory: simulated and NVML GPU inventories, GPU type ids, host facts."""

from __future__ import annotations

import os

import msgspec
import pytest

from mig import SimulatedMigBackend, create_instance
from noded.inventory import GpuInventory, MigBackendGpus, NvmlGpus, SimulatedGpus, gpu_type_id, host_facts
from tests.mig._fake_libnvml import install
from tide.api.errors import InvalidArgument
from tide.api.nodes import GpuInfo, NodeInventory


async def test_simulated_gpus_from_spec() -> None:
    inv: GpuInventory = SimulatedGpus.from_spec("2xH100-80GB,1xRTXPRO6000-96GB,1xL40S-48GB", seed=3)
    gpus = await inv.list_gpus()
    assert [(g.index, g.type_id, g.mig_capable, g.mig_enabled) for g in gpus] == [
        (0, "H100-80GB", True, False),
        (1, "H100-80GB", True, False),
        (2, "RTXPRO6000-96GB", True, False),
        (3, "L40S-48GB", False, False),
    ]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].memory_mb > 80_000
    assert len({g.uuid for g in gpus}) == 4 and all(g.uuid.startswith("GPU-") for g in gpus)


async def test_uuids_are_stable_per_seed() -> None:
    async def uuids(seed: int) -> list[str]:
        return [g.uuid for g in await SimulatedGpus.from_spec("2xA100-80GB", seed=seed).list_gpus()]

    assert await uuids(5) == await uuids(5) != await uuids(6)


async def test_mig_instances_come_from_the_owned_backend() -> None:
    inv = SimulatedGpus.from_spec("1xH100-80GB:mig")
    [gpu] = await inv.list_gpus()
    assert gpu.mig_enabled and gpu.mig_instances == []
    made = create_instance(inv.backend, gpu.uuid, "3g.40gb", 4)
    inv.backend.attach_process(gpu.uuid, 1234, made.uuid)
    [gpu] = await inv.list_gpus()
    [inst] = gpu.mig_instances
    assert (inst.uuid, inst.profile, inst.start, inst.size, inst.busy) == (made.uuid, "3g.40gb", 4, 4, True)


async def test_inventory_round_trips_through_the_wire_type() -> None:
    inv = SimulatedGpus.from_spec("1xRTXPRO6000-96GB:mig")
    [gpu] = await inv.list_gpus()
    create_instance(inv.backend, gpu.uuid, "2g.48gb", 0)
    node = NodeInventory(hostname="h", gpus=await inv.list_gpus())
    assert msgspec.json.decode(msgspec.json.encode(node), type=NodeInventory) == node


async def test_a_lost_gpu_is_left_out() -> None:
    inv = SimulatedGpus.from_spec("2xH200-141GB:mig")
    first, second = await inv.list_gpus()
    inv.backend.lose_gpu(first.uuid)
    assert [g.uuid for g in await inv.list_gpus()] == [second.uuid]


def test_bad_spec_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        SimulatedGpus.from_spec("2xH100-80GB:turbo")


async def test_nvml_gpus_over_the_fake_library(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SimulatedMigBackend.from_spec("1xA100-40GB:mig,1xL40S-48GB", seed=9)
    install(monkeypatch, sim)
    inv = NvmlGpus()
    try:
        a100 = sim.list_gpus()[0].uuid
        made = create_instance(sim, a100, "1g.5gb", 6)
        gpus: list[GpuInfo] = await inv.list_gpus()
    finally:
        inv.close()
    assert [(g.type_id, g.mig_capable, g.mig_enabled) for g in gpus] == [
        ("A100-40GB", True, True),
        ("L40S-48GB", False, False),
    ]
    assert [(i.uuid, i.profile, i.start) for i in gpus[0].mig_instances] == [(made.uuid, "1g.5gb", 6)]
    # Same backend surface as the simulated inventory: identical reports.
    assert gpus == await MigBackendGpus(sim).list_gpus()


@pytest.mark.parametrize(
    ("name", "memory_mb", "type_id"),
    [
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, "RTXPRO6000-96GB"),
        ("NVIDIA L4", 23034, "L4-24GB"),
        ("NVIDIA GeForce RTX 4090", 24564, "RTX4090-24GB"),
        ("NVIDIA GeForce RTX 5090", 32607, "RTX5090-32GB"),
        ("Tesla T4", 15360, "TESLAT4-15GB"),
    ],
)
def test_gpu_type_id(name: str, memory_mb: int, type_id: str) -> None:
    assert gpu_type_id(name, memory_mb) == type_id


def test_host_facts(tmp_path: os.PathLike[str]) -> None:
    facts = host_facts(str(tmp_path))
    assert facts.cpus >= 1 and facts.memory_bytes > 2**20
    assert facts.disk_bytes >= facts.disk_free_bytes > 0
