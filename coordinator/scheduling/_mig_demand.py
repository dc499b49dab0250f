"""MIG demand history, the pure half: what each region demanded, per hour bucket, and forecasts.

The leader samples, at most once a minute, how many devices of each kind its endpoints hold or
wait for in each region: ``"H100-80GB:3g.40gb"`` slices and ``"H100-80GB"`` whole GPUs (a
:func:`compute_demand` map).  Each sample goes into two buckets of the sampled hour, kept in
the store as :class:`MigDemandRecord` (coordinator/_node_schema.py):

* hour of week (``w000``..``w167``, UTC, Monday 00:00 = 0): weekday and weekend peaks differ
  (an EU Monday morning is not an EU Sunday morning), but a bucket learns once a week;
* hour of day (``d00``..``d23``, UTC): learns every day, blind to the weekday.

A forecast uses the hour-of-week bucket once it has seen :data:`MIN_OCCURRENCES` weeks, and the
hour-of-day bucket until then (the figures here are the defaults of :class:`DemandSettings`, the
coordinator config's ``[mig] demand-*`` keys), so a new cluster forecasts after two days and refines after two
weeks.  Within an occurrence (one real hour) samples are averaged; occurrences are folded into
an exponentially weighted average, so a bucket costs a few dozen bytes per demand key, however
long the cluster runs.  UTC buckets shift by an hour at daylight-saving changes; the average
follows within a few occurrences.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from coordinator._node_schema import MigDemandCell, MigDemandRecord, NodeRecord, WorkerAssignment
from coordinator.scheduling._gpu_types import GpuNeed, parse_gpu_type_id
from coordinator.scheduling._mig_fit import catalog_of, profiles_for
from tide.api.endpoints import EndpointSpec
from tide.api.gpu_types import canonical_gpu_type

__all__ = [
    "ALPHA_DAY",
    "ALPHA_WEEK",
    "DEFAULT_DEMAND",
    "MIN_OCCURRENCES",
    "SAMPLE_INTERVAL_S",
    "DemandSettings",
    "Forecast",
    "bucket_label",
    "buckets_of",
    "compute_demand",
    "estimate",
    "forecast_for",
    "update_demand",
]

SAMPLE_INTERVAL_S = 60.0  # the leader samples demand at most this often
ALPHA_DAY = 0.3  # weight of the newest occurrence in an hour-of-day bucket (~2-day memory)
ALPHA_WEEK = 0.4  # ... in an hour-of-week bucket (~2-week memory)
MIN_OCCURRENCES = 2  # a bucket forecasts once it has seen this many occurrences
MAX_CELLS = 32  # demand keys kept per bucket (the largest); bounds a record's size
_EPSILON = 1e-3  # averages below this are forgotten
_WEEK_OFFSET_H = 72  # 1970-01-01 was a Thursday: Monday 00:00 UTC is hour 72 of that week
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

Basis = Literal["hour-of-week", "hour-of-day", "none"]


class DemandSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How demand is learnt and forecast (the coordinator config's ``[mig] demand-*`` keys)."""

    alpha_day: float = ALPHA_DAY
    alpha_week: float = ALPHA_WEEK
    min_occurrences: int = MIN_OCCURRENCES
    max_keys: int = MAX_CELLS

    def alpha_of(self, bucket: str) -> float:
        return self.alpha_week if bucket.startswith("w") else self.alpha_day


DEFAULT_DEMAND = DemandSettings()


class Forecast(msgspec.Struct, frozen=True, kw_only=True):
    """Expected concurrent devices per demand key in one hour (``hour``: unix hours)."""

    hour: int
    basis: Basis
    occurrences: int = 0  # how many occurrences the chosen bucket has averaged
    demand: dict[str, float] = {}


def buckets_of(hour: int) -> tuple[str, str]:
    """The (hour-of-week, hour-of-day) bucket names of unix hour ``hour``."""
    return f"w{(hour + _WEEK_OFFSET_H) % 168:03d}", f"d{hour % 24:02d}"


def bucket_label(hour: int) -> str:
    """``"Tue 09:00 UTC"`` for a unix hour."""
    how = (hour + _WEEK_OFFSET_H) % 168
    return f"{_DAYS[how // 24]} {how % 24:02d}:00 UTC"


def alpha_of(bucket: str, settings: DemandSettings = DEFAULT_DEMAND) -> float:
    return settings.alpha_of(bucket)


def _fold(rec: MigDemandRecord, alpha: float) -> MigDemandRecord:
    """The record with its sampled occurrence folded into the averages (none sampled: as is)."""
    if rec.samples <= 0:
        return rec
    cells = []
    for c in rec.cells:
        mean = c.total / rec.samples
        avg = mean if rec.occurrences == 0 else alpha * mean + (1 - alpha) * c.avg
        if avg >= _EPSILON:
            cells.append(MigDemandCell(key=c.key, avg=avg))
    return msgspec.structs.replace(rec, occurrences=rec.occurrences + 1, samples=0, cells=cells)


def _bounded(cells: list[MigDemandCell], samples: int, max_cells: int) -> list[MigDemandCell]:
    if len(cells) <= max_cells:
        return sorted(cells, key=lambda c: c.key)
    weight = {c.key: max(c.avg, c.total / max(1, samples)) for c in cells}
    kept = sorted(cells, key=lambda c: (-weight[c.key], c.key))[:max_cells]
    return sorted(kept, key=lambda c: c.key)


def update_demand(
    rec: MigDemandRecord | None,
    *,
    region: str,
    bucket: str,
    sample: Mapping[str, float],
    now: float,
    alpha: float,
    max_cells: int = MAX_CELLS,
) -> MigDemandRecord:
    """``rec`` with one demand sample taken at ``now`` (unix seconds) added.  Pure.

    At most one sample per minute counts: a second one in the same (or an earlier) minute
    returns ``rec`` unchanged, so a retried write or a new leader cannot count a minute twice.
    A sample in a later hour first folds the previous occurrence into the averages.  Keys
    absent from ``sample`` count as 0; at most ``max_cells`` keys are kept (the largest).
    """
    minute, hour = int(now // 60), int(now // 3600)
    if rec is None:
        rec = MigDemandRecord(region=region, bucket=bucket)
    if minute <= rec.last_minute or hour < rec.occurrence:
        return rec
    if hour != rec.occurrence:
        rec = msgspec.structs.replace(_fold(rec, alpha), occurrence=hour)
    totals = {c.key: c for c in rec.cells}
    for key, value in sample.items():
        if value > 0 and math.isfinite(value):
            c = totals.get(key) or MigDemandCell(key=key)
            totals[key] = msgspec.structs.replace(c, total=c.total + value)
    samples = rec.samples + 1
    cells = _bounded(list(totals.values()), samples, max_cells)
    return msgspec.structs.replace(rec, samples=samples, last_minute=minute, cells=cells)


def estimate(rec: MigDemandRecord | None, hour: int, alpha: float) -> tuple[dict[str, float], int]:
    """The bucket's average demand from occurrences before unix hour ``hour``, and their count.

    An occurrence still being sampled (``hour`` itself) is left out: it is partial.
    """
    if rec is None:
        return {}, 0
    if rec.occurrence < hour:
        rec = _fold(rec, alpha)
    return {c.key: c.avg for c in rec.cells if c.avg >= _EPSILON}, rec.occurrences


def forecast_for(
    hour: int,
    week: MigDemandRecord | None,
    day: MigDemandRecord | None,
    settings: DemandSettings = DEFAULT_DEMAND,
) -> Forecast:
    """The forecast for unix hour ``hour`` from its two buckets (see the module docstring)."""
    demand, seen = estimate(week, hour, settings.alpha_week)
    if seen >= settings.min_occurrences:
        return Forecast(hour=hour, basis="hour-of-week", occurrences=seen, demand=demand)
    demand, seen = estimate(day, hour, settings.alpha_day)
    if seen >= settings.min_occurrences:
        return Forecast(hour=hour, basis="hour-of-day", occurrences=seen, demand=demand)
    return Forecast(hour=hour, basis="none", occurrences=seen)


def _need_key(need: GpuNeed, gpu_count: int, mig_types: Iterable[str]) -> tuple[str, int] | None:
    """The demand key one waiting worker with ``need`` adds in a region, and how many devices."""
    if need.kind == "gpu":
        return need.type_id, gpu_count
    if need.kind == "mig":
        return f"{need.type_id}:{need.profile}", 1
    if need.kind != "mig-class":
        return None  # "any GPU": no kind to prepare
    # The smallest slice that fits, over the region's MIG card types (as the placer picks).
    options: list[tuple[int, str, str]] = []
    for type_id in sorted(set(mig_types)):
        catalog = catalog_of(type_id)
        names = profiles_for(catalog, need) if catalog is not None else []
        if catalog is not None and names:
            options.append((catalog.profile(names[0]).memory_mb, type_id, names[0]))
    if not options:
        return None
    _, type_id, profile = min(options)
    return f"{type_id}:{profile}", 1


def _waiting(spec: EndpointSpec, mig_types: Iterable[str]) -> tuple[str, int] | None:
    types = list(mig_types)
    for entry in spec.gpu_type_ids:
        need = parse_gpu_type_id(entry)
        if need.kind in ("mig", "mig-class") and spec.gpu_count > 1:
            continue  # the placer skips slices for multi-GPU workers
        found = _need_key(need, spec.gpu_count, types)
        if found is not None:
            return found
    return None


def compute_demand(
    nodes: Iterable[NodeRecord],
    assignments: Iterable[WorkerAssignment],
    waiting: Iterable[tuple[EndpointSpec, int]],
) -> dict[str, dict[str, float]]:
    """Devices demanded now, per region: what workers hold plus what waiting workers ask for.

    Every region with a live node gets an entry (empty = no demand: a zero sample).  A waiting
    worker counts in the regions of its endpoint's data centers (every region when it names
    none), split evenly, as its first ``gpu_type_ids`` entry that the region could serve.  Pure.
    """
    live = [n for n in nodes if not n.lost]
    region_of = {n.id: n.inventory.region for n in live}
    out: dict[str, defaultdict[str, float]] = {n.inventory.region: defaultdict(float) for n in live}
    mig_types: dict[str, set[str]] = {r: set() for r in out}
    dc_region: dict[str, str] = {}
    for n in live:
        dc_region[n.inventory.datacenter] = n.inventory.region
        mig_types[n.inventory.region].update(g.type_id for g in n.inventory.gpus if g.mig_enabled)
    for a in assignments:
        if (region := region_of.get(a.node_id)) is None:
            continue
        type_id = canonical_gpu_type(a.gpu_type)
        if a.mig_profile:
            out[region][f"{type_id}:{a.mig_profile}"] += 1
        else:
            out[region][type_id] += max(1, len(a.devices))
    for spec, count in waiting:
        named = {dc_region[d] for d in spec.data_center_ids if d in dc_region}
        regions = sorted(named if spec.data_center_ids else out)
        for region in regions:
            found = _waiting(spec, mig_types[region])
            if found is not None and count > 0:
                out[region][found[0]] += count * found[1] / len(regions)
    return {r: {k: float(v) for k, v in sorted(c.items()) if v > 0} for r, c in sorted(out.items())}
