"""RunPod GPU pools <-> Tide GPU types (tide/api/runpod_gpus.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tide.api.errors import InvalidArgument
from tide.api.runpod_gpus import GPU_POOLS, RUNPOD_GPU_TYPES, gpu_ids_of, tide_types_of

_TIDE_TYPES = sorted({t.tide_type for t in RUNPOD_GPU_TYPES})


def test_pools_become_tide_types_in_order_less_exclusions() -> None:
    assert tide_types_of("HOPPER_141") == ["H200-141GB"]
    assert tide_types_of("ADA_80_PRO,AMPERE_48,-NVIDIA A40") == ["H100-80GB", "H100-94GB", "RTXA6000-48GB"]
    assert tide_types_of("") == []  # any GPU
    assert tide_types_of("ada_24") == ["RTX4090-24GB"]


@pytest.mark.parametrize(("gpu_ids", "names"), [("AMPERE_12", "AMPERE_16"), ("ADA_24,-GTX 690", "NVIDIA L4")])
def test_unknown_pools_and_types_name_the_known_ones(gpu_ids: str, names: str) -> None:
    with pytest.raises(InvalidArgument, match=names):
        tide_types_of(gpu_ids)


def test_every_pool_member_is_a_known_type() -> None:
    for pool in GPU_POOLS:
        assert tide_types_of(pool)


@given(st.lists(st.sampled_from(_TIDE_TYPES), unique=True))
def test_gpu_ids_round_trip_to_the_same_types(types: list[str]) -> None:
    gpu_ids = gpu_ids_of(types)
    assert set(tide_types_of(gpu_ids)) == set(types)
    if types:  # the first priority's pool comes first (RunPod orders the types inside a pool)
        assert types[0] in tide_types_of(gpu_ids.split(",")[0])
