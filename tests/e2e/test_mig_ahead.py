"""Ahead-of-time MIG partitioning end to end, in process, on an injected clock.

The leader's real scheduler (coordinator.control.Scheduler, its ``tick`` called with simulated
times) runs on the in-process store and view; each host is noded's real MIG reconciler on a
simulated backend, fed the desired layouts the node API would send (coordinator desired_for)
and heartbeating its inventory into the store at the simulated time.  Workers never start: an
assignment is what makes a slice in use, as it is for the real planner.

An EU host has two MIG H100s, a US host one.  For three simulated days, EU runs a batch job
on a whole card (7g.80gb) at 02:00 and a peak of six 1g.10gb workers at 09:00; one 3g.40gb
worker runs all the time.  On the fourth day, ten minutes before each of those hours and
before any worker asks, the leader re-cuts the idle EU card to that hour's mix; the card with
the busy 3g keeps it untouched, and the US card is never touched.  With a flat demand nothing
is re-cut ahead of time at all.  Finally ``tide mig forecast`` shows the plan.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from aiohttp import web

from coordinator._node_schema import MigLayoutRecord, NodeRecord, nkeys
from coordinator._schema import encode, keys
from coordinator.api._auth import Auth, hash_key
from coordinator.api._authz import authz_middleware
from coordinator.api._desired import desired_for
from coordinator.api._http import error_middleware
from coordinator.api._mig_forecast_routes import MigForecastRoutes
from coordinator.api._routes_table import ROUTES
from coordinator.control import Scheduler
from coordinator.store import MemoryStore, Store
from coordinator.view import ClusterView
from noded._mig import MigReconciler, mark_in_use
from noded.inventory import SimulatedGpus
from tests.fixtures.etcd import free_port
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory
from tide.cli.main import main as tide_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DAY0 = 1_799_971_200.0  # Fri 2027-01-15 00:00 UTC
HOUR, MINUTE = 3600.0, 60.0
KEY = "tk_mig_ahead"


class Host:
    """noded's MIG side for one simulated host: reconcile, then heartbeat into the store."""

    def __init__(self, name: str, region: str, spec: str, seed: int) -> None:
        self.name, self.region = name, region
        self.gpus = SimulatedGpus.from_spec(spec, seed=seed)
        self.mig = MigReconciler(self.gpus)

    async def beat(self, store: Store, view: ClusterView, now: float) -> list[GpuInfo]:
        layouts = desired_for(view, self.name, public_url="http://unused", token=lambda e, w: "t").mig_layouts
        in_use = {d for a in view.assignments_of(self.name) for d in a.devices}
        await self.mig.reconcile(layouts, in_use)
        gpus = mark_in_use(await self.gpus.list_gpus(), in_use)
        inv = NodeInventory(
            hostname=self.name,
            region=self.region,
            datacenter=f"{self.region}-1",
            gpus=gpus,
            mig_errors=self.mig.errors,
        )
        await store.put(
            nkeys.node(self.name), encode(NodeRecord(id=self.name, inventory=inv, last_heartbeat=now))
        )
        return gpus


class Cluster:
    def __init__(self, store: Store, view: ClusterView) -> None:
        self.store, self.view = store, view
        self.scheduler = Scheduler(store, view, lost_after_s=HOUR)
        self.hosts = [Host("eu-1", "EU", "2xH100-80GB:mig", 1), Host("us-1", "US", "1xH100-80GB:mig", 2)]
        self.gpus: dict[str, list[GpuInfo]] = {}

    async def settle(self) -> None:
        """Until the view has seen every write so far (the leader plans from the view)."""
        revision = await self.store.revision()
        async with asyncio.timeout(5):
            while self.view.revision < revision:
                await self.view.cluster_changed.wait(0.01)

    async def beat(self, now: float) -> None:
        for host in self.hosts:
            await self.settle()
            self.gpus[host.name] = await host.beat(self.store, self.view, now)

    async def step(self, now: float) -> None:
        """Hosts heartbeat at ``now``; a leader pass; hosts reconcile and report (a cut, its report)."""
        await self.beat(now)
        await self.settle()
        await self.scheduler.tick(now)
        await self.beat(now)
        await self.beat(now)

    async def endpoint(self, name: str, gpu: str, workers: int, now: float) -> None:
        spec = EndpointSpec(
            name=name,
            image="dir:///unused",
            gpu_type_ids=[gpu],
            workers_min=workers,
            workers_max=workers,
            data_center_ids=["EU-1"],
        )
        await self.store.put(keys.endpoint(name), encode(Endpoint(id=name, spec=spec, created_at=now)))

    async def placed(self, ep: str, n: int, now: float) -> float:
        """Leader passes a minute apart until ``n`` workers of ``ep`` hold a device."""
        for _ in range(10):
            await self.step(now)
            if sum(1 for a in self.view.assignments.values() if a.endpoint_id == ep and a.devices) == n:
                return now
            now += MINUTE
        raise AssertionError(f"{ep}: {n} workers not placed; reason: {self.view.reasons.get(ep)}")

    async def hour_of(self, ep: str, gpu: str, n: int, start: float) -> None:
        """``n`` workers of ``ep`` from ``start`` for an hour, sampled every ten minutes."""
        await self.endpoint(ep, gpu, n, start)
        now = await self.placed(ep, n, start)
        while now < start + 50 * MINUTE:
            now += 10 * MINUTE
            await self.step(now)
        await self.store.delete(keys.endpoint(ep))
        await self.step(start + HOUR)

    def layouts(self) -> dict[str, MigLayoutRecord]:
        return {gpu: rec for cards in self.view.mig_layouts.values() for gpu, (rec, _) in cards.items()}

    def card(self, host: str, index: int) -> GpuInfo:
        return self.gpus[host][index]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    store = MemoryStore()
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    await view.ready.wait()
    try:
        yield Cluster(store, view)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await store.close()


def _profiles(gpu: GpuInfo) -> list[str]:
    return sorted(i.profile for i in gpu.mig_instances)


async def test_idle_cards_are_recut_before_the_hour_toward_its_learnt_mix(cluster: Cluster) -> None:
    await cluster.endpoint("steady", "H100-80GB:3g.40gb", 1, DAY0)
    await cluster.placed("steady", 1, DAY0)
    for day in range(3):
        base = DAY0 + day * 86400
        await cluster.hour_of("batch", "H100-80GB:7g.80gb", 1, base + 2 * HOUR)
        await cluster.hour_of("peak", "H100-80GB:1g.10gb", 6, base + 9 * HOUR)
        await cluster.step(base + 15 * HOUR)  # a quiet hour sampled too
    # A new leader for the fourth day: it knows only what the store kept.
    cluster.scheduler = Scheduler(cluster.store, cluster.view, lost_after_s=HOUR)
    steady = next(a for a in cluster.view.assignments.values() if a.endpoint_id == "steady").devices[0]
    us_card = cluster.card("us-1", 0).uuid

    def busy_3g() -> tuple[str, int, str]:
        gpu = next(g for g in cluster.gpus["eu-1"] if any(i.uuid == steady for i in g.mig_instances))
        inst = next(i for i in gpu.mig_instances if i.uuid == steady)
        return gpu.uuid, inst.start, inst.profile

    held = busy_3g()
    day3 = DAY0 + 3 * 86400
    other = next(g for g in cluster.gpus["eu-1"] if g.uuid != held[0])
    await cluster.step(day3 + HOUR)  # nothing is prepared for an hour that saw no demand
    assert _profiles(next(g for g in cluster.gpus["eu-1"] if g.uuid == other.uuid)) == _profiles(other)
    assert "7g.80gb" not in _profiles(other)
    # Before the night batch, no worker asking yet: the idle card becomes one 7g.
    await cluster.step(day3 + 2 * HOUR - 10 * MINUTE)
    other = next(g for g in cluster.gpus["eu-1"] if g.uuid != held[0])
    assert _profiles(other) == ["7g.80gb"]
    assert cluster.layouts()[other.uuid].source == "ahead"
    assert busy_3g() == held and all(
        i.busy for i in cluster.card("eu-1", 0).mig_instances if i.uuid == steady
    )
    assert us_card not in cluster.layouts()
    # Before the morning peak it is cut back toward 1g slices (six in all with the 3g's card).
    await cluster.step(day3 + 9 * HOUR - 10 * MINUTE)
    eu = cluster.gpus["eu-1"]
    ones = sum(1 for g in eu for i in g.mig_instances if i.profile == "1g.10gb")
    assert ones == 6 and "7g.80gb" not in [p for g in eu for p in _profiles(g)]
    assert busy_3g() == held and us_card not in cluster.layouts()
    # The peak's workers find their slices cut already: placed on the first pass, no re-cut.
    before = {g: rec.written_at for g, rec in cluster.layouts().items()}
    await cluster.endpoint("peak", "H100-80GB:1g.10gb", 6, day3 + 9 * HOUR)
    assert await cluster.placed("peak", 6, day3 + 9 * HOUR) == day3 + 9 * HOUR
    assert {g: rec.written_at for g, rec in cluster.layouts().items()} == before

    out = await _forecast_cli(cluster, day3 + 2 * HOUR - 10 * MINUTE, "--region", "EU")
    (eu_report,) = out["regions"]
    assert eu_report["label"] == "Mon 02:00 UTC" and eu_report["basis"] == "hour-of-day"
    assert eu_report["forecast"]["H100-80GB:7g.80gb"] == pytest.approx(1.0)
    assert eu_report["plan"]["deficit"] == {"H100-80GB:7g.80gb": 1}


async def test_a_flat_demand_is_never_recut_ahead_of_time(cluster: Cluster) -> None:
    await cluster.endpoint("small", "H100-80GB:1g.10gb", 3, DAY0)
    await cluster.endpoint("mid", "H100-80GB:3g.40gb", 2, DAY0)
    await cluster.placed("small", 3, DAY0)
    await cluster.placed("mid", 2, DAY0 + 10 * MINUTE)
    cuts = dict(cluster.layouts())
    for now in itertools.takewhile(lambda t: t < DAY0 + 3 * 86400, itertools.count(DAY0 + HOUR, 20 * MINUTE)):
        await cluster.step(now)
    assert cluster.layouts() == cuts  # not one layout written after the on-demand cuts
    assert cluster.scheduler.ahead.last["EU"].reason == "the cards hold the forecast"


async def _forecast_cli(cluster: Cluster, at: float, *argv: str) -> dict[str, Any]:
    """``tide mig forecast --json`` against the admin route on a loopback port."""
    auth = Auth(cluster.view, admin_key_hashes=[hash_key(KEY)], cluster_secret=b"s", store=cluster.store)
    app = web.Application(middlewares=[error_middleware, authz_middleware(auth, ROUTES)])
    MigForecastRoutes(store=cluster.store, view=cluster.view).add_to(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        iso = _iso(at)
        human = await asyncio.to_thread(_cli, url, "mig", "forecast", "--at", iso, *argv)
        assert "Mon 02:00 UTC (in 10m), from hour-of-day" in human and "7g.80gb" in human, human
        return json.loads(await asyncio.to_thread(_cli, url, "mig", "forecast", "--at", iso, "--json", *argv))  # type: ignore[no-any-return]
    finally:
        await runner.cleanup()


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M")


def _cli(url: str, *argv: str) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = tide_cli(["--url", url, "--api-key", KEY, *argv])
    assert code == 0, buf.getvalue()
    return buf.getvalue()
