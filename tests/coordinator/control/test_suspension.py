"""The scheduler suspends idle workers instead of removing them (issue 16), in its real loop over a
MemoryStore and a ClusterView: suspend on scale-down (usage closed), resume on scale-up (usage
reopened, same worker id), eviction when another endpoint takes the GPU, and the job-take refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from coordinator._node_schema import NodeRecord, UsageRecord, WorkerAssignment, nkeys
from coordinator._schema import encode, keys
from coordinator.control import Scheduler
from coordinator.store import MemoryStore
from coordinator.view import ClusterView
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory, WorkerReport

pytestmark = pytest.mark.timeout(30)

NOW = 1_000_000.0
NODE, GPU = "n1", "GPU-0"
GIB = 1 << 30


class Leader:
    def __init__(self, store: MemoryStore, view: ClusterView) -> None:
        self.store, self.view = store, view
        self.scheduler = Scheduler(store, view, lost_after_s=3600.0)

    async def settle(self) -> None:
        revision = await self.store.revision()
        async with asyncio.timeout(5):
            while self.view.revision < revision:
                await self.view.cluster_changed.wait(0.01)

    async def tick(self, now: float) -> None:
        await self.scheduler.tick(now)
        await self.settle()

    async def endpoint(self, name: str, workers_min: int, version: int = 1) -> None:
        spec = EndpointSpec(
            name=name, image="dir:///x", gpu_type_ids=["H100-80GB"], workers_min=workers_min, idle_timeout=1
        )
        await self.store.put(
            keys.endpoint(name), encode(Endpoint(id=name, spec=spec, created_at=NOW, version=version))
        )
        await self.settle()

    async def node(self, now: float, *reports: WorkerReport, budget: int = 2 * GIB) -> None:
        gpu = GpuInfo(index=0, uuid=GPU, type_id="H100-80GB")
        inv = NodeInventory(
            hostname=NODE, gpus=[gpu], cpus=8, memory_bytes=64 * GIB, suspend_budget_bytes=budget
        )
        await self.store.put(
            nkeys.node(NODE),
            encode(NodeRecord(id=NODE, inventory=inv, last_heartbeat=now, workers=list(reports))),
        )
        await self.settle()

    async def usage(self) -> dict[str, UsageRecord]:
        res = await self.store.range(nkeys.USAGE)
        return {
            kv.key.decode().rsplit("/", 1)[1]: msgspec.json.decode(kv.value, type=UsageRecord)
            for kv in res.kvs
        }


@pytest.fixture
async def leader() -> AsyncIterator[Leader]:
    store = MemoryStore()
    view = ClusterView(store)
    feed = asyncio.create_task(view.run())
    await view.ready.wait()
    try:
        yield Leader(store, view)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await store.close()


def _report(w: str, state: str = "initializing", rss: int = 0, ep: str = "ep-a") -> WorkerReport:
    return WorkerReport(worker_id=w, endpoint_id=ep, state=state, rss_bytes=rss)  # type: ignore[arg-type]


async def _idle_worker(leader: Leader) -> WorkerAssignment:
    await leader.node(NOW)
    await leader.endpoint("ep-a", workers_min=1)
    await leader.tick(NOW)
    [a] = leader.view.assignments.values()
    await leader.node(NOW, _report(a.worker_id))
    leader.view.note_seen("ep-a", a.worker_id, NOW)
    await leader.endpoint("ep-a", workers_min=0)  # same version: only the count changes
    await leader.tick(NOW + 1)  # the first tick that sees it idle starts its idle clock
    await leader.tick(NOW + 5)
    return a


async def test_scale_down_suspends_and_scale_up_resumes_the_same_worker(leader: Leader) -> None:
    a = await _idle_worker(leader)
    w = a.worker_id
    marked = leader.view.assignments[w]
    assert marked.suspended and marked.version == 1 and marked.suspended_at == NOW + 5
    assert leader.view.suspended(w)
    usage = await leader.usage()
    assert w not in usage  # not billed while suspended
    [closed] = usage.values()
    assert closed.worker_id == w and closed.stopped_at == NOW + 5
    # Suspended: no capacity, so the placer sees its GPU free; nothing else is wanted yet.
    await leader.node(NOW + 6, _report(w, "suspended", rss=GIB))
    await leader.tick(NOW + 6)
    assert leader.view.assignments[w].suspended
    await leader.endpoint("ep-a", workers_min=1)
    await leader.tick(NOW + 7)
    assert list(leader.view.assignments) == [w]  # resumed, not a fresh placement
    back = leader.view.assignments[w]
    assert not back.suspended and back.resumed_at == NOW + 7
    assert (await leader.usage())[w].started_at == NOW + 7
    await leader.tick(NOW + 8)  # noded still reports it suspended: counted as starting, no second worker
    assert list(leader.view.assignments) == [w]


async def test_another_endpoint_takes_the_gpu_and_the_suspended_worker_goes(leader: Leader) -> None:
    a = await _idle_worker(leader)
    await leader.node(NOW + 6, _report(a.worker_id, "suspended", rss=GIB))
    await leader.endpoint("ep-b", workers_min=1)
    await leader.tick(NOW + 7)
    [b] = leader.view.assignments.values()
    assert b.endpoint_id == "ep-b" and b.devices == [GPU]  # never two on one GPU: the suspended one went


async def test_budget_ttl_and_exit_drop_suspended_workers(leader: Leader) -> None:
    a = await _idle_worker(leader)
    await leader.node(NOW + 6, _report(a.worker_id, "suspended", rss=3 * GIB))  # over the 2 GiB budget
    await leader.tick(NOW + 6)
    assert leader.view.assignments == {}
    assert leader.view.removed_workers.get(a.worker_id)


async def test_a_suspended_worker_killed_is_dropped_and_replaced_on_demand(leader: Leader) -> None:
    a = await _idle_worker(leader)
    await leader.node(NOW + 6, _report(a.worker_id, "exited"))
    await leader.tick(NOW + 6)
    assert leader.view.assignments == {}
    await leader.endpoint("ep-a", workers_min=1)
    await leader.tick(NOW + 7)
    [fresh] = leader.view.assignments.values()
    assert fresh.worker_id != a.worker_id and not fresh.suspended


async def test_hosts_without_a_budget_stop_idle_workers_as_before(leader: Leader) -> None:
    await leader.node(NOW, budget=0)
    await leader.endpoint("ep-a", workers_min=1)
    await leader.tick(NOW)
    [a] = leader.view.assignments.values()
    await leader.node(NOW, _report(a.worker_id), budget=0)
    leader.view.note_seen("ep-a", a.worker_id, NOW)
    await leader.endpoint("ep-a", workers_min=0)
    await leader.tick(NOW + 1)
    await leader.tick(NOW + 5)
    assert leader.view.assignments == {}
    assert (await leader.usage())[a.worker_id].unassigned_at == NOW + 5
