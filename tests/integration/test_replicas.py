"""Several coordinator replicas on one etcd: any replica serves any request,
and exactly one leads the control loops (it hands over when it stops)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from coordinator.jobs import JobSettings
from coordinator.server import Coordinator, CoordinatorSettings
from coordinator.store import open_store
from tests.fixtures.etcd import EtcdServer, etcd_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd binary not installed (apt install etcd-server)"),
]

ADMIN = "adm_replicas_test"


@pytest.fixture
def etcd() -> Any:
    with EtcdServer() as server:
        yield server


async def _replica(url: str) -> Coordinator:
    sock = socket.create_server(("127.0.0.1", 0))
    settings = CoordinatorSettings(
        state_dir=tempfile.mkdtemp(prefix="tide-replica-"),
        admin_key_hashes=[hashlib.sha256(ADMIN.encode()).hexdigest()],
        jobs=JobSettings(take_wait_s=2.0),
        election_ttl_s=2.0,
        sock=sock,
    )
    coordinator = Coordinator(open_store(url), settings)
    await coordinator.start()
    return coordinator


@pytest.fixture
async def replicas(etcd: EtcdServer) -> AsyncIterator[list[Coordinator]]:
    pair = [await _replica(etcd.url), await _replica(etcd.url)]
    yield pair
    for c in pair:
        await c.stop(timeout=5.0)
        await c.store.close()


async def _call(http: aiohttp.ClientSession, method: str, url: str, key: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body, headers={"Authorization": key}) as resp:
        assert resp.status < 300, await resp.text()
        return await resp.json() if resp.status != 204 else None


async def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_replicas_any_replica_serves_any_request(replicas: list[Coordinator]) -> None:
    a, b = replicas
    async with aiohttp.ClientSession() as http:
        await _call(
            http,
            "POST",
            f"{a.url}/admin/v1/endpoints",
            f"Bearer {ADMIN}",
            {"name": "rep", "image": "dir:///x"},
        )
        await _wait_for(lambda: "rep" in b.view.endpoints)
        token = (await _call(http, "POST", f"{a.url}/admin/v1/endpoints/rep/workers/w1/token", ADMIN))[
            "token"
        ]
        submitted = await _call(http, "POST", f"{a.url}/v2/rep/run", f"Bearer {ADMIN}", {"input": {"n": 7}})
        job = await _call(http, "GET", f"{b.url}/v2/rep/job-take/w1?job_in_progress=0", token)
        assert job == {"id": submitted["id"], "input": {"n": 7}}
        await _call(
            http, "POST", f"{a.url}/v2/rep/job-done/w1/{job['id']}?isStream=false", token, {"output": 49}
        )
        status = await _call(http, "GET", f"{b.url}/v2/rep/status/{job['id']}", f"Bearer {ADMIN}")
        assert status["status"] == "COMPLETED"
        assert status["output"] == 49
        assert status["workerId"] == "w1"


async def test_replicas_one_leader_hands_over_on_stop(replicas: list[Coordinator]) -> None:
    await _wait_for(lambda: sum(c.is_leader for c in replicas) == 1)
    leader = next(c for c in replicas if c.is_leader)
    follower = next(c for c in replicas if not c.is_leader)
    await leader.stop(timeout=5.0)
    await _wait_for(lambda: follower.is_leader, timeout=20.0)
