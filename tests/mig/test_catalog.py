"""The shipped per-SKU catalogs: well-formed, faithful to reference/mig.md §3, and mapped from NVML names."""

from __future__ import annotations

import pynvml
import pytest

from mig import Placement, catalog_for_name, list_type_ids, load_catalog
from tide.api.errors import InvalidArgument, NotFound
from tide.api.gpu_types import canonical_gpu_type

SKUS = [
    "A100-40GB",
    "A100-80GB",
    "H100-80GB",
    "H100-94GB",
    "H200-141GB",
    "B200-180GB",
    "B300-269GB",
    "RTXPRO6000-96GB",
]


def test_every_sku_ships_a_catalog() -> None:
    assert sorted(SKUS) == list(list_type_ids())


@pytest.mark.parametrize("type_id", SKUS)
def test_catalog_is_well_formed(type_id: str) -> None:
    cat = load_catalog(type_id)
    assert cat.type_id == type_id and cat.grid in (8, 12) and cat.profiles
    assert len({p.name for p in cat.profiles}) == len(cat.profiles)
    assert len({p.profile_id for p in cat.profiles}) == len(cat.profiles)
    assert len({p.profile_enum for p in cat.profiles}) == len(cat.profiles)
    for p in cat.profiles:
        assert p.source, f"{p.name} names no source"
        assert 0 <= p.profile_enum < pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
        assert 1 <= p.max_count <= len(p.placements)
        assert {pl.size for pl in p.placements} == {p.size}
        assert all(pl.start >= 0 and pl.end <= cat.grid for pl in p.placements)
        assert p.compute_slices <= cat.compute_slices and 0 < p.memory_mb <= cat.memory_mb
    # The whole-card profile takes the whole grid.
    assert any(p.size == cat.grid and p.compute_slices == cat.compute_slices for p in cat.profiles)


@pytest.mark.parametrize("type_id", [t for t in SKUS if t != "RTXPRO6000-96GB"])
def test_datacenter_parts_share_the_8_unit_grid(type_id: str) -> None:
    cat = load_catalog(type_id)
    starts = {p.profile_id: (p.starts, p.size) for p in cat.profiles}
    assert starts == {
        19: ((0, 1, 2, 3, 4, 5, 6), 1),
        20: ((0, 1, 2, 3, 4, 5, 6), 1),
        15: ((0, 2, 4, 6), 2),
        14: ((0, 2, 4), 2),
        9: ((0, 4), 4),
        5: ((0,), 4),
        0: ((0,), 8),
    }
    enums = {p.profile_id: p.profile_enum for p in cat.profiles}
    assert enums[19] == pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE
    assert enums[20] == pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1
    assert enums[15] == pynvml.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2
    assert enums[9] == pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE
    assert enums[0] == pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE
    assert cat.resetless == (not type_id.startswith("A100"))


def test_rtx_pro_6000_uses_its_own_ids_on_a_12_unit_grid() -> None:
    cat = load_catalog("RTXPRO6000-96GB")
    assert (cat.grid, cat.compute_slices, cat.max_mig_devices) == (12, 4, 4)
    assert cat.profile("1g.24gb").profile_id == 14
    assert cat.profile("2g.48gb").profile_id == 5
    assert cat.profile("4g.96gb").profile_id == 0
    assert cat.profile("1g.24gb").placements == tuple(Placement(start=s, size=3) for s in (0, 3, 6, 9))
    assert cat.profile("2g.48gb").starts == (0, 6)
    assert cat.profile("1g.24gb+me.all").max_count == 1


def test_inferred_entries_are_marked() -> None:
    b200 = load_catalog("B200-180GB")
    assert b200.profile("3g.90gb").inferred and b200.profile("7g.180gb").inferred
    b300 = load_catalog("B300-269GB")
    assert all(p.inferred for p in b300.profiles)  # no -lgip capture of a B300 was found
    a100 = load_catalog("A100-40GB")
    assert not any(p.inferred for p in a100.profiles)
    assert a100.engine_budget.inferred


@pytest.mark.parametrize(
    ("nvml_name", "type_id"),
    [
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("A100-SXM4-40GB", "A100-40GB"),  # older drivers drop the vendor prefix
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("NVIDIA H100 NVL", "H100-94GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA B200", "B200-180GB"),
        ("NVIDIA B300 SXM6 AC", "B300-269GB"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTXPRO6000-96GB"),
        ("nvidia rtx pro 6000 blackwell max-q workstation edition", "RTXPRO6000-96GB"),
        ("NVIDIA GeForce RTX 4090", None),
        ("NVIDIA L40S", None),
    ],
)
def test_catalog_for_name(nvml_name: str, type_id: str | None) -> None:
    assert catalog_for_name(nvml_name) == type_id


def test_unknown_type_and_profile_are_errors() -> None:
    with pytest.raises(NotFound):
        load_catalog("V100-16GB")
    with pytest.raises(InvalidArgument):
        load_catalog("H100-80GB").profile("3g.20gb")
    with pytest.raises(InvalidArgument):
        load_catalog("H100-80GB").profile_by_id(99)


def test_catalogs_are_frozen_and_cached() -> None:
    cat = load_catalog("H100-80GB")
    assert load_catalog("H100-80GB") is cat
    with pytest.raises(AttributeError):
        cat.grid = 12  # type: ignore[misc]


def test_b300_is_named_by_the_gib_nvml_reports() -> None:
    """275040 MiB (nvidia-smi on NVIDIA B300 SXM6 AC) is 268.6 GiB: `<MODEL>-<GiB>GB` gives B300-269GB,
    NVIDIA's full-card profile is 7g.269gb, and the marketing 288 GB (decimal) aliases it."""
    cat = load_catalog("B300-269GB")
    assert cat.memory_mb == 275040 and round(cat.memory_mb / 1024) == 269
    assert cat.profile("7g.269gb").size == cat.grid
    counts = {p.name: p.max_count for p in cat.profiles}
    assert counts == {
        "1g.34gb": 7,
        "1g.34gb+me": 1,
        "1g.67gb": 4,
        "2g.67gb": 3,
        "3g.135gb": 2,
        "4g.135gb": 1,
        "7g.269gb": 1,
    }
    assert canonical_gpu_type("NVIDIA B300 SXM6 AC") == "B300-269GB"
    assert canonical_gpu_type("b300-288gb") == "B300-269GB"
