"""Fixtures for FlashBoot tests: a keeper per test in its own temp dirs, small synthetic models."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flashboot import Keeper, KeeperConfig


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = f"/dev/shm/tide-flashboot-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_keeper(state_dir: Path, shm_dir: str, *, ram: int = 64 << 20, disk: int = 64 << 20) -> Keeper:
    keeper = Keeper(
        KeeperConfig(
            state_dir=str(state_dir),
            shm_dir=shm_dir,
            ram_budget_bytes=ram,
            disk_budget_bytes=disk,
            read_chunk_bytes=64 << 10,  # small chunks, so tiny test models still span several
        )
    )
    keeper.start()
    return keeper


@pytest.fixture
def keeper(tmp_path: Path, shm_dir: str) -> Keeper:
    return make_keeper(tmp_path / "state", shm_dir)


def numpy_model(seed: int = 0, layers: int = 4) -> dict[str, np.ndarray]:
    """A small model with odd shapes (so padding appears) and several dtypes."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((33, 16), dtype=np.float32)}
    for i in range(layers):
        sd[f"model.layers.{i}.attn.weight"] = rng.standard_normal((17, 16)).astype(np.float16)
        sd[f"model.layers.{i}.norm.weight"] = rng.standard_normal(16, dtype=np.float32)
        sd[f"model.layers.{i}.counter"] = rng.integers(0, 1 << 40, size=(3,), dtype=np.int64)
    sd["model.norm.weight"] = rng.standard_normal(16, dtype=np.float32)
    sd["model.flag"] = np.array([True, False, True])
    sd["model.scalar"] = np.array(3.5, dtype=np.float64)
    sd["model.empty"] = np.zeros((0, 4), dtype=np.float32)
    sd["lm_head.weight"] = rng.standard_normal((33, 16), dtype=np.float32)
    return sd


def torch_model(seed: int = 0, layers: int = 4, width: int = 48) -> dict[str, object]:
    import torch

    g = torch.Generator().manual_seed(seed)
    sd: dict[str, object] = {"embed.weight": torch.randn(37, width, generator=g).to(torch.bfloat16)}
    for i in range(layers):
        sd[f"layers.{i}.w"] = torch.randn(width, width + 3, generator=g).to(torch.bfloat16)
        sd[f"layers.{i}.b"] = torch.randn(width + 3, generator=g)
        sd[f"layers.{i}.idx"] = torch.randint(0, 1000, (5,), generator=g)
    sd["head.weight"] = torch.randn(37, width, generator=g).to(torch.float16)
    sd["flag"] = torch.tensor([True, False])
    return sd
