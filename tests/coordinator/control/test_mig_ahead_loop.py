"""The leader's ahead-of-time MIG loop (coordinator/control/_mig_ahead_loop.py) inside the scheduler.

One EU host with one idle MIG H100 cut in seven 1g.10gb slices, and a stored history that
forecasts one 7g.80gb for the coming hour: the leader's pass re-cuts the card ahead of time.
Regressions from the review of the change that landed it:

* the layout write is guarded by the revisions the plan read, so a card whose layout or node
  changed while the planner ran (in its thread) is not re-cut;
* a planner that raises something other than a TideError does not stop the scheduling pass;
* a worker placed in the same pass as the re-cut does not get an instance the new layout destroys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

import coordinator.control._mig_ahead_loop as ahead_loop
from coordinator._node_schema import MigDemandCell, MigDemandRecord, MigLayoutRecord, NodeRecord, nkeys
from coordinator._schema import encode, keys
from coordinator.control import Scheduler
from coordinator.scheduling._mig_ahead import AheadPlan, plan_ahead
from coordinator.scheduling._mig_demand import buckets_of
from coordinator.store import MemoryStore
from coordinator.view import ClusterView
from mig import Layout, load_catalog, plan_layout
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.nodes import GpuInfo, MigInstance, NodeInventory

pytestmark = pytest.mark.timeout(30)

HOUR_PLANNED = 500_000  # a unix hour (a Friday, 08:00 UTC)
NOW = HOUR_PLANNED * 3600.0 - 300  # five minutes before it: within the default ten-minute lead
NODE, CARD = "eu-1", "GPU-eu-0"


def _card() -> GpuInfo:
    cat = load_catalog("H100-80GB")
    layout = plan_layout(cat, [], ["1g.10gb"] * 7, busy=[])
    assert isinstance(layout, Layout)
    insts = [
        MigInstance(uuid=f"MIG-{s.start}", profile=s.profile, start=s.start, size=cat.profile(s.profile).size)
        for s in layout.slots
    ]
    return GpuInfo(
        index=0, uuid=CARD, type_id="H100-80GB", mig_capable=True, mig_enabled=True, mig_instances=insts
    )


def _node(heartbeat: float) -> NodeRecord:
    inv = NodeInventory(hostname=NODE, region="EU", datacenter="EU-1", gpus=[_card()])
    return NodeRecord(id=NODE, inventory=inv, last_heartbeat=heartbeat)


class Leader:
    def __init__(self, store: MemoryStore, view: ClusterView) -> None:
        self.store, self.view = store, view
        self.scheduler = Scheduler(store, view, lost_after_s=3600.0)

    async def settle(self) -> None:
        """Until the view has seen every write so far."""
        revision = await self.store.revision()
        async with asyncio.timeout(5):
            while self.view.revision < revision:
                await self.view.cluster_changed.wait(0.01)

    async def layout(self) -> MigLayoutRecord | None:
        kv = await self.store.get(nkeys.mig_layout(NODE, CARD))
        return None if kv is None else msgspec.json.decode(kv.value, type=MigLayoutRecord)

    async def endpoint(self, name: str, profile: str) -> None:
        spec = EndpointSpec(
            name=name,
            image="dir:///unused",
            gpu_type_ids=[f"H100-80GB:{profile}"],
            workers_min=1,
            workers_max=1,
            data_center_ids=["EU-1"],
        )
        await self.store.put(keys.endpoint(name), encode(Endpoint(id=name, spec=spec, created_at=NOW)))


@pytest.fixture
async def leader() -> AsyncIterator[Leader]:
    store = MemoryStore()
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    await view.ready.wait()
    try:
        # Two past occurrences of this hour of day, one 7g.80gb each: the forecast wants one.
        _, day = buckets_of(HOUR_PLANNED)
        cell = MigDemandCell(key="H100-80GB:7g.80gb", avg=1.0)
        history = MigDemandRecord(
            region="EU", bucket=day, occurrences=2, occurrence=HOUR_PLANNED - 24, cells=[cell]
        )
        await store.put(nkeys.mig_demand("EU", day), encode(history))
        await store.put(nkeys.node(NODE), encode(_node(NOW)))
        out = Leader(store, view)
        await out.settle()
        yield out
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await store.close()


def _racing_planner(leader: Leader, change: Callable[[], Awaitable[None]]) -> Callable[..., AheadPlan]:
    """The real planner, run after ``change`` has landed in the store and the view: the card
    changes while the plan is computed (in the planner's thread), as a watch event can."""
    real = plan_ahead
    loop = asyncio.get_running_loop()

    async def change_and_settle() -> None:
        await change()
        await leader.settle()

    def plan(**kwargs: Any) -> AheadPlan:
        asyncio.run_coroutine_threadsafe(change_and_settle(), loop).result(timeout=10)
        return real(**kwargs)

    return plan


async def test_mig_ahead_recuts_the_idle_card_toward_the_forecast(leader: Leader) -> None:
    await leader.scheduler.tick(NOW)
    stored = await leader.layout()
    assert stored is not None and stored.source == "ahead" and stored.profiles == ["7g.80gb"]


@pytest.mark.parametrize("what", ["layout", "node"])
async def test_mig_ahead_card_changed_while_planning_is_not_recut(
    leader: Leader, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Regression: the guard compared the revisions the view had at write time, not those the
    plan was computed from, so a card changed mid-plan was re-cut anyway."""
    admin = MigLayoutRecord(
        node_id=NODE, gpu_uuid=CARD, profiles=["1g.10gb"] * 7, written_at=NOW, source="admin"
    )

    async def change() -> None:
        if what == "layout":  # an operator's `tide mig apply` lands mid-plan
            await leader.store.put(nkeys.mig_layout(NODE, CARD), encode(admin))
        else:  # a heartbeat lands mid-plan (it could report an instance taken, or a drain)
            await leader.store.put(nkeys.node(NODE), encode(_node(NOW + 1)))

    monkeypatch.setattr(ahead_loop, "plan_ahead", _racing_planner(leader, change))
    await leader.scheduler.tick(NOW)
    assert leader.scheduler.ahead.last["EU"].targets  # the plan did want to re-cut it
    assert await leader.layout() == (admin if what == "layout" else None)


async def test_mig_ahead_planner_error_does_not_stop_placement(
    leader: Leader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: only TideError was caught, so a bug in the planner escaped the scheduler's
    pass (and its run loop, which also catches only TideError)."""
    calls = 0

    def broken(**kwargs: Any) -> AheadPlan:
        nonlocal calls
        calls += 1
        raise ValueError("a planner bug")

    monkeypatch.setattr(ahead_loop, "plan_ahead", broken)
    await leader.endpoint("small", "1g.10gb")
    await leader.settle()
    with caplog.at_level(logging.ERROR, logger="tide.coordinator.mig_ahead"):
        await leader.scheduler.tick(NOW)
    assert calls == 1 and "a planner bug" in caplog.text
    await leader.settle()
    (placed,) = leader.view.assignments.values()
    assert placed.endpoint_id == "small" and placed.devices
    await leader.scheduler.tick(NOW + 1)  # the next pass goes on, and does not retry at once
    assert calls == 1 and await leader.layout() is None


async def test_mig_ahead_recut_withholds_the_cards_instances_in_the_same_pass(leader: Leader) -> None:
    """Regression: the pass's placement read the layouts from the view, which had not seen the
    ahead-of-time re-cut yet, and placed a worker on a 1g instance the new 7g layout destroys."""
    await leader.endpoint("small", "1g.10gb")
    await leader.settle()
    await leader.scheduler.tick(NOW)
    stored = await leader.layout()
    assert stored is not None and stored.source == "ahead" and stored.profiles == ["7g.80gb"]
    await leader.settle()
    # It waits: while the cut is pending, every instance of the card is withheld.
    assert not leader.view.assignments
    assert "no free H100-80GB:1g.10gb" in leader.view.reasons["small"]
