"""The view's wake-ups and its per-endpoint queue mirror (a heap of queue keys)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from dataclasses import dataclass, field

__all__ = ["QueuedJob", "Signal"]


class Signal:
    """A broadcast wake-up: ``wait`` returns after the next ``fire`` (or timeout)."""

    def __init__(self) -> None:
        # Made by the first wait after a fire: most fires (one per watched change)
        # find nobody waiting and then cost nothing.
        self._event: asyncio.Event | None = None

    def fire(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self, timeout: float) -> bool:
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
                return True
        return False


@dataclass(slots=True, order=True)
class QueuedJob:
    key: bytes
    job_id: str = field(compare=False)
    endpoint_id: str = field(compare=False)


@dataclass(slots=True)
class _Queue:
    heap: list[bytes] = field(default_factory=list)
    present: dict[bytes, str] = field(default_factory=dict)
    signal: Signal = field(default_factory=Signal)

    def add(self, key: bytes, job_id: str) -> None:
        if key not in self.present:
            self.present[key] = job_id
            heapq.heappush(self.heap, key)

    def pop(self, n: int, ep: str) -> list[QueuedJob]:
        out: list[QueuedJob] = []
        while self.heap and len(out) < n:
            key = heapq.heappop(self.heap)
            job_id = self.present.pop(key, None)
            if job_id is not None:
                out.append(QueuedJob(key, job_id, ep))
        return out

    def oldest_created(self) -> float | None:
        """Submission time of the oldest normal-priority queued job (from its seq)."""
        while self.heap and self.heap[0] not in self.present:
            heapq.heappop(self.heap)
        for key in self.heap[:1]:
            tail = key.rsplit(b"/", 1)[1]
            if tail[:1] == b"0":
                return int(tail[1:18]) / 1_000_000
        return None

    def counts(self) -> tuple[int, int]:
        """(normal, low priority) queued jobs."""
        low = sum(1 for k in self.present if k.rsplit(b"/", 1)[1][:1] == b"1")
        return len(self.present) - low, low
