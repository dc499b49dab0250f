"""One simulated run (:func:`simulate`) and the best-static sweep (:func:`best_static`)."""

from __future__ import annotations

import math
import time

import msgspec

from coordinator.scheduling import DEFAULT_AHEAD, AheadSettings, catalog_of
from simulate._cluster import Card, Cluster, Endpoint, Host
from simulate._engine import Engine
from simulate._errors import InputError
from simulate._inputs import EndpointKnobs, EndpointsFile, Fleet, Trace
from simulate._layouts import cut, named_layouts
from simulate._meter import Meter, percentile
from simulate._policy import Policy, serves, static_candidates, whole_entries
from tide.api.endpoints import EndpointSpec

__all__ = ["HourStats", "SimResult", "SimSettings", "best_static", "simulate"]

EPOCH = 1704067200.0  # Monday 2024-01-01 00:00 UTC: day 0 of every run
TIDE_DEFAULTS = EndpointKnobs(workers_max=1000)  # a fleet-sized cap; the rest: EndpointSpec's


class SimSettings(msgspec.Struct, frozen=True, kw_only=True):
    tick_s: float = 1.0  # the leader's pass: at least once a second (Scheduler.run)
    warmup_days: int = 2  # the trace replayed first, so the demand history can forecast
    drain_s: float = 3600.0  # after the last arrival, at most this long to finish the queues
    recut_interval_s: float = 30.0  # [nodes] mig-recut-interval-s
    ahead: AheadSettings = DEFAULT_AHEAD


class HourStats(msgspec.Struct, frozen=True, kw_only=True):
    hour: int
    gpu_hours: float
    slice_hours_billed: float
    p50_queue_delay_s: float
    p95_queue_delay_s: float
    p99_queue_delay_s: float
    jobs: int
    cold_starts: int
    recuts: int


class SimResult(msgspec.Struct, frozen=True, kw_only=True):
    policy: str
    gpu_hours: float
    slice_hours_billed: float
    p50_queue_delay_s: float
    p95_queue_delay_s: float
    p99_queue_delay_s: float
    jobs: int  # submitted during the measured day
    completed: int
    in_flight: int
    dropped: int  # never served
    cold_starts: int
    recuts: int
    hours: list[HourStats]
    requests_simulated: int  # all days, warm-up included
    wall_s: float


def _spec(ep_id: str, entries: list[str], dcs: list[str], knobs: list[EndpointKnobs]) -> EndpointSpec:
    raw: dict[str, object] = {
        "name": ep_id,
        "image": "simulated",
        "gpuTypeIds": entries,
        "dataCenterIds": dcs,
    }
    for k in knobs:
        raw.update(
            {f.encode_name: v for f in msgspec.structs.fields(k) if (v := getattr(k, f.name)) is not None}
        )
    return msgspec.convert(raw, EndpointSpec)


def _endpoints(
    trace: Trace, fleet: Fleet, file: EndpointsFile, policy: Policy, path: str
) -> tuple[list[Endpoint], list[str]]:
    names = {e.name for e in trace.endpoints}
    for name in file.endpoints:
        if name not in names:
            raise InputError(
                path, 0, f"endpoint {name!r} is not in the trace; the trace's: {', '.join(sorted(names))}"
            )
    out, ids = [], []
    for e in trace.endpoints:
        entries = whole_entries(e.gpu, fleet) if policy.kind == "whole" else e.gpu
        knobs = [TIDE_DEFAULTS, file.defaults, file.endpoints.get(e.name, EndpointKnobs())]
        ep_id = f"{e.name}.{e.region}"
        try:
            spec = _spec(ep_id, entries, fleet.datacenters(e.region), knobs)
        except msgspec.ValidationError as exc:
            raise InputError(path, 0, f"endpoint {e.name}: {exc}") from None
        out.append(Endpoint(spec))
        ids.append(ep_id)
    return out, ids


def _hosts(fleet: Fleet, policy: Policy) -> list[Host]:
    hosts: list[Host] = []
    for g, cards in fleet.groups:
        for _ in range(g.count):
            h = Host(f"{g.datacenter.lower()}-{len(hosts):05d}", g.region, g.datacenter)
            for i, (type_id, mig) in enumerate(cards):
                h.cards.append(Card(h, i, type_id, mig and policy.kind != "whole"))
            hosts.append(h)
    return hosts


def _cut_static(cluster: Cluster, policy: Policy) -> None:
    for card in cluster.cards.values():
        if card.mig and policy.kind == "static":
            catalog = catalog_of(card.type_id)
            assert catalog is not None
            profiles = list(named_layouts(card.type_id)[policy.layouts[card.type_id]])
            done = cut(catalog, [], profiles, [], f"MIG-{card.uuid}", 0)
            assert done is not None
            cluster.set_instances(card, done[0])


def simulate(
    trace: Trace,
    fleet: Fleet,
    policy: Policy,
    *,
    endpoints: EndpointsFile | None = None,
    endpoints_path: str = "endpoints",
    settings: SimSettings | None = None,
) -> SimResult:
    """Replay ``trace`` on ``fleet`` under ``policy``; figures for the last (measured) day."""
    settings = settings or SimSettings()
    began = time.perf_counter()
    period = max(86400.0, math.ceil(max(trace.t, default=0.0) / 86400 + 1e-9) * 86400)
    days = settings.warmup_days + 1
    start = EPOCH + settings.warmup_days * period
    meter = Meter(start, start + period)
    eps, ids = _endpoints(trace, fleet, endpoints or EndpointsFile(), policy, endpoints_path)
    cluster = Cluster(_hosts(fleet, policy), eps, meter)
    _cut_static(cluster, policy)
    engine = Engine(
        cluster,
        trace,
        ids,
        stages=fleet.stages,
        ahead=settings.ahead if policy.kind == "dynamic" else None,
        recut_interval_s=settings.recut_interval_s,
        dynamic=policy.kind == "dynamic",
        tick_s=settings.tick_s,
        days=days,
        period=period,
        epoch=EPOCH,
    )
    end = engine.run(settings.drain_s)
    cluster.close(end)
    return _result(policy.label, engine, meter, len(trace) * days, time.perf_counter() - began)


def _result(label: str, engine: Engine, m: Meter, requests: int, wall: float) -> SimResult:
    every = [d for h in m.delays for d in h]
    hours = [
        HourStats(
            hour=h,
            gpu_hours=round(m.gpu_h[h], 4),
            slice_hours_billed=round(m.slice_h[h], 4),
            p50_queue_delay_s=round(percentile(m.delays[h], 50), 3),
            p95_queue_delay_s=round(percentile(m.delays[h], 95), 3),
            p99_queue_delay_s=round(percentile(m.delays[h], 99), 3),
            jobs=m.jobs[h],
            cold_starts=m.cold_starts[h],
            recuts=m.recuts[h],
        )
        for h in range(24)
    ]
    return SimResult(
        policy=label,
        gpu_hours=round(sum(m.gpu_h), 4),
        slice_hours_billed=round(sum(m.slice_h), 4),
        p50_queue_delay_s=round(percentile(every, 50), 3),
        p95_queue_delay_s=round(percentile(every, 95), 3),
        p99_queue_delay_s=round(percentile(every, 99), 3),
        jobs=engine.submitted,
        completed=engine.completed,
        in_flight=engine.started - engine.completed,
        dropped=engine.submitted - engine.started,
        cold_starts=sum(m.cold_starts),
        recuts=sum(m.recuts),
        hours=hours,
        requests_simulated=requests,
        wall_s=round(wall, 3),
    )


def best_static(
    trace: Trace,
    fleet: Fleet,
    target_p95_s: float | None,
    *,
    endpoints: EndpointsFile | None = None,
    settings: SimSettings | None = None,
) -> tuple[SimResult | None, list[SimResult]]:
    """Run every named static layout that can serve the trace; the cheapest (gpu_hours) with
    nothing dropped and a p95 at or under ``target_p95_s`` (None: any), and all the runs."""
    runs = []
    for policy in static_candidates(fleet):
        if all(serves(policy, fleet, e.gpu) for e in trace.endpoints):
            runs.append(simulate(trace, fleet, policy, endpoints=endpoints, settings=settings))
    ok = [r for r in runs if r.dropped == 0 and (target_p95_s is None or r.p95_queue_delay_s <= target_p95_s)]
    return min(ok, key=lambda r: (r.gpu_hours, r.policy), default=None), runs
