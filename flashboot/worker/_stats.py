"""Stage timings of a restore: which tier the bytes came from, how many, how long.  No torch."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Literal

import msgspec

__all__ = ["LoadStats", "Source", "StageRecorder", "StageTiming"]

Source = Literal["t0", "t1", "t2", "source"]


class StageTiming(msgspec.Struct, frozen=True, kw_only=True):
    stage: str  # e.g. "lookup", "t2->t1->t0", "t1->t0", "pin", "pack", "t1->t2"
    tier: str  # the tier the stage read from ("t1", "t2", "source", "t0", "-")
    nbytes: int
    seconds: float

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9 if self.seconds > 0 else 0.0


class LoadStats(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    fingerprint: str  # "" when loaded without a keeper
    tier: Source  # the nearest tier that held the model
    device: str
    nbytes: int
    seconds: float
    stages: tuple[StageTiming, ...] = ()
    direct_io: bool | None = None  # T2 reads: O_DIRECT (True) or buffered fallback (False)
    pinned_host: bool | None = None  # CUDA: host buffer registered with cudaHostRegister


class StageRecorder:
    """Collects StageTimings; one per restore, not thread-safe."""

    def __init__(self) -> None:
        self.stages: list[StageTiming] = []
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str, tier: str, nbytes: int = 0) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages.append(
                StageTiming(stage=name, tier=tier, nbytes=nbytes, seconds=time.perf_counter() - t)
            )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
