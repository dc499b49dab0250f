"""Accounting over the measured day: card-hours, slice-hours, queue delays, cold starts, re-cuts.

``gpu_hours`` counts a card for every moment at least one worker is assigned to it (running,
starting or kept warm while idle): that is when the card cannot be handed to anyone else or
switched off.  ``slice_hours_billed`` sums each worker's share of its card (slice_share: a
3g.40gb on an H100 is 0.5; a whole GPU is 1 per GPU) over its assigned time.  Intervals are
clipped to the measured window and split per hour of the day.
"""

from __future__ import annotations

import math

__all__ = ["Meter", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted in place); 0.0 for none."""
    if not values:
        return 0.0
    values.sort()
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


class Meter:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.gpu_h = [0.0] * 24
        self.slice_h = [0.0] * 24
        self.delays: list[list[float]] = [[] for _ in range(24)]
        self.jobs = [0] * 24
        self.cold_starts = [0] * 24
        self.recuts = [0] * 24

    def hour(self, t: float) -> int | None:
        """The hour of the measured day ``t`` falls in, or None outside the window."""
        if self.start <= t < self.end:
            return int((t - self.start) // 3600) % 24
        return None

    def interval(self, a: float, b: float, weight: float, into: list[float]) -> None:
        a, b = max(a, self.start), min(b, self.end)
        while a < b:
            h = int((a - self.start) // 3600)
            edge = min(b, self.start + (h + 1) * 3600)
            into[h % 24] += (edge - a) * weight / 3600
            a = edge

    def count(self, t: float, into: list[int]) -> None:
        h = self.hour(t)
        if h is not None:
            into[h] += 1

    def delay(self, arrived: float, started: float) -> None:
        h = self.hour(arrived)
        if h is not None:
            self.delays[h].append(started - arrived)
