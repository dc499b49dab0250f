"""FlashBoot end to end in ``tide dev`` (in process, two nodes): a torch-model endpoint scaled to zero
comes back from the weights its host kept.

The unmodified RunPod handler of examples/torch-mlp loads its safetensors file through
``flashboot.load``.  The first request loads it from the file (node-1 is drained, so the worker runs
on node-2); the endpoint scales to zero; node-2 reports the model in T1 for that endpoint, and the
next request is placed there although node-1 (free again) would win the tie, restores from T1
(every stage report says so) and answers the same bits.  A keeper restarted with no RAM budget
demotes the model to T2, a keeper restarted again keeps it there, and the next cold start restores
from T2.  Tests wait (bounded) for states, never on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest

from flashboot import Keeper
from tests.fixtures.coordinator import REPO_ROOT
from tide.api.errors import TideError
from tide.dev import DevCluster, parser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

MLP = f"dir://{REPO_ROOT / 'examples' / 'torch-mlp'}"
KEY = "tk_flashboot_test"
STAGES = ["placement", "process_start", "runtime_import", "weight_restore", "handler_ready", "first_job"]
X = [[0.1 * i - 0.7 for i in range(16)], [1.0] * 16]
T = TypeVar("T")


async def wait_for(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await probe()
                if value:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Dev:
    def __init__(self, cluster: DevCluster, session: aiohttp.ClientSession, weights: Path) -> None:
        self.cluster = cluster
        self.session = session
        self.weights = weights

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with self.session.request(method, self.cluster.url + path, json=body, headers=headers) as r:
            payload = await r.json(content_type=None)
            assert r.status < 300, (method, path, r.status, payload)
            return payload

    async def endpoint(self) -> str:
        name = f"mlp-{uuid.uuid4().hex[:8]}"
        env = {"PYTHONPATH": str(REPO_ROOT), "TIDE_EXAMPLE_WEIGHTS": str(self.weights)}
        env["TIDE_EXAMPLE_MLP_HIDDEN"] = "64"
        spec = {"name": name, "image": MLP, "env": env, "flashboot": True, "gpuTypeIds": ["H100-80GB"]}
        spec |= {"workersMin": 0, "workersMax": 1, "idleTimeout": 1, "scalerType": "REQUEST_COUNT"}
        spec |= {"scalerValue": 1}
        await self.ok("POST", "/admin/v1/endpoints", spec)
        return name

    async def run(self, ep: str) -> dict[str, Any]:
        out = await self.ok("POST", f"/v2/{ep}/runsync?wait=90000", {"input": {"x": X}})
        assert out["status"] == "COMPLETED", out
        return dict(out)

    async def cold_start(self, ep: str, job_id: str) -> dict[str, Any]:
        """The job's coldStart once the worker's own stages have joined it."""

        async def complete() -> dict[str, Any] | None:
            cold = (await self.ok("GET", f"/v2/{ep}/status/{job_id}")).get("coldStart")
            return cold if cold and cold["complete"] else None

        return await wait_for(complete, f"the cold start of job {job_id}")

    async def last_cold_start(self, ep: str, job_id: str) -> dict[str, Any]:
        async def recorded() -> dict[str, Any] | None:
            last = (await self.ok("GET", f"/admin/v1/endpoints/{ep}"))["lastColdStart"]
            return last if last and last["jobId"] == job_id else None

        return await wait_for(recorded, f"lastColdStart of {ep} = job {job_id}")

    async def scaled_to_zero(self, ep: str) -> None:
        async def gone() -> bool:
            if await self.ok("GET", f"/admin/v1/workers?endpoint={ep}"):
                return False
            for agent in self.cluster._agents:
                for w in await agent.runtime.list():
                    if w.labels.get("tide.endpoint") == ep and w.state == "running":
                        return False
            return True

        await wait_for(gone, f"{ep} scaled to zero")

    async def holdings(self, node: str) -> list[dict[str, Any]]:
        nodes = await self.ok("GET", "/admin/v1/nodes")
        return list(next(n for n in nodes if n["id"] == node)["inventory"]["flashboot"])

    def restart_keeper(self, node: str, **changes: Any) -> Keeper:
        """What a noded restart does to the keeper: a new one on the same directories."""
        host = next(a for a in self.cluster._agents if a.settings.hostname == node).flashboot
        assert host is not None
        keeper = Keeper(msgspec.structs.replace(host.keeper.config, **changes))
        keeper.start()
        host.keeper = keeper
        return keeper


def _stages(cold: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in cold["stages"]}


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Dev]:
    argv = ["--port", "0", "--api-key", KEY, "--state-dir", str(tmp_path / "dev"), "--nodes", "2"]
    argv += ["--gpus", "1xH100-80GB", "--claim-grace", "10", "--lost-after", "60"]
    argv += ["--suspend-budget-mb", "0"]  # scaled to zero = stopped: the next worker restores from T1
    cluster = DevCluster(parser().parse_args(argv))
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Dev(cluster, session, tmp_path / "weights" / "mlp.safetensors")
    finally:
        agents = list(cluster._agents)
        await cluster.stop(stop_workers=False)
        await asyncio.gather(*[_kill(a.runtime, w.id) for a in agents for w in await a.runtime.list()])
        for a in agents:  # T1 lives in /dev/shm, outside tmp_path
            if a.flashboot is not None:
                shutil.rmtree(a.flashboot.keeper.config.shm_dir, ignore_errors=True)


async def _kill(runtime: Any, worker_id: str) -> None:
    with contextlib.suppress(TideError):
        await runtime.stop(worker_id, grace=0.5)
        await runtime.delete(worker_id)


async def test_scaled_to_zero_endpoint_restores_from_t1_then_t2_on_the_holding_host(dev: Dev) -> None:
    ep = await dev.endpoint()
    await dev.ok("POST", "/admin/v1/nodes/node-1/drain")

    # 1. First request: the weights come from the safetensors file, on node-2.
    first = await dev.run(ep)
    assert first["output"]["tier"] == "source"
    cold = await dev.cold_start(ep, first["id"])
    assert [s["stage"] for s in cold["stages"]] == STAGES
    assert cold["nodeId"] == "node-2" and cold["weightTier"] == "source" and cold["weightBytes"] > 0
    assert (await dev.last_cold_start(ep, first["id"]))["weightTier"] == "source"

    # 2. Scaled to zero, node-2 still holds the model for this endpoint, in shared RAM.
    await dev.ok("POST", "/admin/v1/nodes/node-1/undrain")
    await dev.scaled_to_zero(ep)

    async def held_in_t1() -> list[dict[str, Any]] | None:
        held = [h for h in await dev.holdings("node-2") if ep in h["endpoints"]]
        return held if held and "t1" in held[0]["tiers"] else None

    (held,) = await wait_for(held_in_t1, "node-2 reporting the model in T1")
    assert held["modelIds"] == ["torch-mlp"] and held["nbytes"] > 0
    assert await dev.holdings("node-1") == []

    # 3. The next request goes to the holding host (node-1 would win the tie) and restores from T1.
    second = await dev.run(ep)
    workers = await dev.ok("GET", f"/admin/v1/workers?endpoint={ep}")
    if workers:  # unless it already idled out (idleTimeout 1 s)
        assert workers[0]["coldStart"]["jobId"] == second["id"]
    assert second["output"]["y"] == first["output"]["y"]
    assert second["output"]["tier"] == "t1"
    cold = await dev.cold_start(ep, second["id"])
    assert cold["nodeId"] == "node-2" and cold["weightTier"] == "t1"
    assert _stages(cold)["weight_restore"]["tier"] == "t1"
    last = await dev.last_cold_start(ep, second["id"])
    assert last["weightTier"] == "t1"
    metrics = await _metrics(dev)
    labels = {f'endpoint="{ep}"', 'stage="weight_restore"', 'tier="t1"', 'path="fresh"'}
    counts = [
        line
        for line in metrics.splitlines()
        if line.startswith("tide_cold_start_seconds_count{") and line.endswith(" 1.0")
    ]  # the client library decides the labels' order
    assert any(labels <= set(line[line.index("{") + 1 : line.index("}")].split(",")) for line in counts)

    # 4. A keeper restarted without RAM budget demotes the model to T2; restarted again, T2 stays.
    await dev.scaled_to_zero(ep)
    keeper = dev.restart_keeper("node-2", ram_budget_bytes=0)
    keeper = dev.restart_keeper("node-2", ram_budget_bytes=1 << 30)
    (model,) = [m for m in keeper.holdings().models if ep in m.owners]
    assert model.tiers == ("t2",)

    third = await dev.run(ep)
    assert third["output"]["y"] == first["output"]["y"]
    assert third["output"]["tier"] == "t2"
    cold = await dev.cold_start(ep, third["id"])
    assert cold["nodeId"] == "node-2" and cold["weightTier"] == "t2"


async def _metrics(dev: Dev) -> str:
    async with dev.session.get(dev.cluster.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}) as r:
        return await r.text()
