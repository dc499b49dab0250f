"""Host -> device copy paths: the pinned staging ring (exercised with CPU tensors) and the mode choice."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from flashboot.worker._device import (  # noqa: E402
    ENV_HOST_COPY,
    PinnedRing,
    StagedCopier,
    copy_all,
    host_copy_mode,
)


def _random(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("slot_bytes", [4096, 65536, 1 << 20])
def test_staged_copier_moves_every_byte_through_a_small_ring(slot_bytes: int) -> None:
    src = _random(3 * (1 << 20) + 12345)
    dst = torch.zeros_like(src)
    ring = PinnedRing(slots=3, slot_bytes=slot_bytes, pinned=False)
    copier = StagedCopier(dst, src, ring)
    # Out-of-order slices of uneven sizes, as chunks land from a reader pool.
    cuts = [0, 100_000, 1_500_000, 1_500_001, 2_900_000, src.numel()]
    for a, b in reversed(list(itertools.pairwise(cuts))):
        copier.submit(a, b)
    copier.finish()
    assert torch.equal(dst, src)


def test_copy_all_through_a_ring_is_bitwise() -> None:
    src = _random(5 * 65536 + 7, seed=1)
    dst = torch.empty_like(src)
    copy_all(dst, src, chunk=3 * 65536, ring=PinnedRing(slots=2, slot_bytes=65536, pinned=False))
    assert torch.equal(dst, src)


def test_host_copy_mode_follows_t1_pages_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_HOST_COPY, raising=False)
    assert host_copy_mode(True) == "register" and host_copy_mode(False) == "ring"
    monkeypatch.setenv(ENV_HOST_COPY, "ring")
    assert host_copy_mode(True) == "ring"
    monkeypatch.setenv(ENV_HOST_COPY, "register")
    assert host_copy_mode(False) == "register"
    monkeypatch.setenv(ENV_HOST_COPY, "bogus")  # unknown values fall back to auto
    assert host_copy_mode(False) == "ring"
