"""``tide simulate gen-trace``: a synthetic US/EU day, seeded, so anyone can rerun the headline.

Each region has the same endpoints with a different daily shape (hours UTC): interactive ones
follow the region's day (EU peaks at 12:00, US at 18:00: six hours apart), a batch endpoint on
whole-card-sized slices runs at the region's night, so the profile mix at night differs from the
day's.  A few bursts (ten minutes at four times the rate) land at random times.  Arrivals are
drawn from that intensity (exactly ``requests`` of them), service times from a log-normal
around each endpoint's mean.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import msgspec

__all__ = ["ENDPOINTS", "PEAKS", "fleet_toml", "gen_trace"]

PEAKS = {"EU": 12.0, "US": 18.0}  # hour of the region's daytime peak, UTC
# name -> (gpu priority list, mean service s, share of the region's traffic, daytime (True) or night)
ENDPOINTS: dict[str, tuple[str, float, float, bool]] = {
    "chat-small": ("H100-80GB:1g.10gb,RTXPRO6000-96GB:1g.24gb", 8.0, 0.40, True),
    "chat-large": ("mig-40gb", 20.0, 0.20, True),
    "vision": ("mig-20gb", 6.0, 0.25, True),
    "batch-embed": ("mig-80gb", 90.0, 0.10, False),
    "rerank": ("H100-80GB:1g.10gb", 3.0, 0.05, True),
}
_MINUTES = 1440


class _Line(msgspec.Struct, array_like=False):
    t: float
    endpoint: str
    region: str
    gpu: str
    service_s: float


def _shape(minute: int, peak_h: float, day: bool, bursts: list[tuple[int, str]], name: str) -> float:
    centre = peak_h if day else (peak_h + 12) % 24
    d = abs(minute / 60 - centre)
    d = min(d, 24 - d)
    level = 0.15 + math.exp(-(d * d) / (2 * 3.0**2))
    if any(start <= minute < start + 10 and who == name for start, who in bursts):
        level *= 4
    return level


def gen_trace(out: str, *, requests: int = 100_000, seed: int = 1, bursts: int = 6) -> int:
    """Write the trace to ``out``; the number of lines written."""
    rng = random.Random(seed)
    keys: list[tuple[str, str]] = []
    weights: list[float] = []
    for region, peak in sorted(PEAKS.items()):
        day_names = [n for n, e in ENDPOINTS.items() if e[3]]
        burst = [(rng.randrange(_MINUTES - 10), rng.choice(day_names)) for _ in range(bursts)]
        for name, (_, _, share, day) in ENDPOINTS.items():
            curve = [_shape(m, peak, day, burst, name) for m in range(_MINUTES)]
            total = sum(curve)
            keys.append((region, name))
            weights.extend(share * c / total for c in curve)
    cum = list(_accumulate(weights))
    picks = rng.choices(range(len(weights)), cum_weights=cum, k=requests)
    rows = []
    for p in picks:
        k, minute = divmod(p, _MINUTES)
        region, name = keys[k]
        gpu, mean, _, _ = ENDPOINTS[name]
        service = round(mean * rng.lognormvariate(-0.125, 0.5), 3)
        rows.append((round(minute * 60 + rng.random() * 60, 3), name, region, gpu, max(0.05, service)))
    rows.sort()
    enc = msgspec.json.Encoder()
    with Path(out).open("wb") as f:
        for row in rows:
            f.write(enc.encode(_Line(*row)) + b"\n")
    return len(rows)


def _accumulate(xs: list[float]) -> list[float]:
    out, s = [], 0.0
    for x in xs:
        s += x
        out.append(s)
    return out


def fleet_toml(hosts: int, gpus: str = "4xH100-80GB:mig,4xRTXPRO6000-96GB:mig") -> str:
    """A fleet of ``hosts`` hosts split evenly between the US and the EU."""
    us = hosts - hosts // 2
    parts = []
    for region, dc, count in (("US", "US-TX-1", us), ("EU", "EU-RO-1", hosts // 2)):
        if count:
            parts.append(
                f'[[hosts]]\nregion = "{region}"\ndatacenter = "{dc}"\ncount = {count}\ngpus = "{gpus}"\n'
            )
    return "\n".join(parts)
