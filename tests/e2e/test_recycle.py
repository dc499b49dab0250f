"""refresh_worker / stopPod end to end in ``tide dev``: the worker that asked
to be recycled is stopped and a fresh one (a new worker id) serves the next
job; nothing is lost on the way."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fixtures.coordinator import REPO_ROOT
from tide.dev import DevCluster, parser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "tk_recycle_test"
HANDLERS = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers'}"


@pytest.fixture
async def dev(tmp_path: Any) -> AsyncIterator[tuple[DevCluster, aiohttp.ClientSession]]:
    args: argparse.Namespace = parser().parse_args(
        ["--port", "0", "--api-key", KEY, "--state-dir", str(tmp_path), "--gpus", "1xH100-80GB"]
    )
    cluster = DevCluster(args)
    await cluster.start()
    session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"})
    try:
        yield cluster, session
    finally:
        await session.close()
        await cluster.stop()


async def _runsync(session: aiohttp.ClientSession, url: str, body: Any) -> dict[str, Any]:
    async with session.post(f"{url}/v2/recycle/runsync?wait=60000", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_recycle_stoppod_worker_is_replaced_by_a_fresh_one(dev: tuple[DevCluster, Any]) -> None:
    cluster, session = dev
    spec = {"name": "recycle", "image": HANDLERS, "command": ["python", "-u", "refresh.py"]}
    spec |= {"workersMin": 1, "workersMax": 1, "idleTimeout": 60}
    async with session.post(f"{cluster.url}/admin/v1/endpoints", json=spec) as resp:
        assert resp.status == 201, await resp.text()
    first = await _runsync(session, cluster.url, {"input": 1})
    assert first["status"] == "COMPLETED"
    assert first["output"] == {"done": 1}
    second = await _runsync(session, cluster.url, {"input": 2})
    assert second["status"] == "COMPLETED"
    assert second["output"] == {"done": 2}
    assert second["workerId"] != first["workerId"], "a recycled worker must not take another job"
    async with asyncio.timeout(30):
        while True:
            async with session.get(f"{cluster.url}/admin/v1/workers?endpoint=recycle") as resp:
                ids = [w["workerId"] for w in await resp.json()]
            if first["workerId"] not in ids:
                break
            await asyncio.sleep(0.2)
