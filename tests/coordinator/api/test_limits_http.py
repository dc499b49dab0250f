"""The per-endpoint API limits through the real HTTP API: a coordinator on
MemoryStore in the test's event loop, its limiter's clock frozen so that only
the requests themselves spend the budget.

A refused request gets 429, ``Retry-After`` in whole seconds and a JSON
``{"error": ...}`` that names the limit and the wait; operator keys and the
worker API are never limited; the real runpod SDK backs off on the 429 and
then gets its answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.api._limits import LIMITS, RouteLimit
from coordinator.api._throttle import APP_KEY_THROTTLE, Throttle
from coordinator.store import MemoryStore
from tests.fixtures.coordinator import InProcessCoordinator

pytestmark = pytest.mark.timeout(60)


class Client:
    def __init__(self, c: InProcessCoordinator, session: aiohttp.ClientSession, key: str) -> None:
        self.c = c
        self.s = session
        self.key = key
        assert c.coordinator is not None and c.coordinator.app is not None
        self.throttle: Throttle = c.coordinator.app[APP_KEY_THROTTLE]
        self.now = 0.0
        self.throttle.clock = lambda: self.now

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {key or self.key}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else b""
        async with self.s.request(method, self.c.url + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, json.loads(raw) if raw else None, resp.headers

    async def refused_total(self) -> float:
        admin = {"Authorization": f"Bearer {self.c.admin_key}"}  # /metrics takes a viewer or admin key
        async with self.s.get(self.c.url + "/metrics", headers=admin) as resp:
            text = await resp.text()
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("tide_api_refused_total")
        )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    store = MemoryStore()
    async with InProcessCoordinator(store, state_dir=str(tmp_path), take_wait_s=0.2, stop_wait_s=0.2) as c:
        await c.admin.create_endpoint("ep")
        created = await c.admin.call("POST", "/admin/v1/keys", {"name": "client"})
        async with aiohttp.ClientSession() as session:
            yield Client(c, session, str(created["key"]))
    await store.close()


@pytest.fixture(autouse=True)
def _runpod_globals_restored() -> Iterator[None]:
    """The runpod SDK's base URL is a module global: a test that points it at its coordinator
    must put it back (monkeypatch), or later tests and clients call a port that is gone."""
    import runpod

    before = runpod.endpoint_url_base
    yield
    assert runpod.endpoint_url_base == before, "a test left runpod.endpoint_url_base changed"


def _assert_refusal(status: int, out: Any, headers: Any, *words: str, retry_after: int) -> None:
    assert status == 429, (status, out)
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Retry-After"] == str(retry_after)
    assert isinstance(out, dict) and isinstance(out.get("error"), str), out
    for word in (*words, f"retry after {retry_after} s"):
        assert word in out["error"], (word, out["error"])


async def test_purge_queue_past_its_rate_gets_429_with_retry_after(client: Client) -> None:
    for _ in range(2):
        status, out, _ = await client.call("POST", "/v2/ep/purge-queue")
        assert status == 200, out
    status, out, headers = await client.call("POST", "/v2/ep/purge-queue")
    _assert_refusal(status, out, headers, "/v2/ep/purge-queue", "2 requests per 10 s", retry_after=5)
    assert await client.refused_total() == 1
    # an operator key is not limited; the budget comes back with time
    assert (await client.call("POST", "/v2/ep/purge-queue", key=client.c.admin_key))[0] == 200
    client.now += 5
    assert (await client.call("POST", "/v2/ep/purge-queue"))[0] == 200


async def test_unknown_endpoints_and_bad_keys_spend_no_budget(client: Client) -> None:
    for _ in range(3):
        assert (await client.call("POST", "/v2/ep/purge-queue", key="tk_wrong"))[0] == 401
        assert (await client.call("POST", "/v2/nope/purge-queue"))[0] == 404
    assert (await client.call("POST", "/v2/ep/purge-queue"))[0] == 200


async def _stalled_run(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A /run whose body has not come yet: in flight (holding its slot) until it does."""
    host, port = client.c.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v2/ep/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {client.key}\r\nContent-Length: 15\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def test_run_past_its_concurrency_gets_429_until_a_request_ends(client: Client) -> None:
    client.throttle.limits = {**LIMITS, "run": RouteLimit(rate=1000, concurrent=2)}
    stalled = [await _stalled_run(client) for _ in range(2)]
    for _ in range(500):
        if client.throttle.in_flight("ep", "run") == 2:
            break
        await asyncio.sleep(0.01)
    assert client.throttle.in_flight("ep", "run") == 2
    status, out, headers = await client.call("POST", "/v2/ep/run", {"input": {}})
    _assert_refusal(status, out, headers, "concurrency limit", "2 requests in flight", retry_after=1)
    for reader, writer in stalled:  # the bodies come: both are accepted, their slots free
        writer.write(b'{"input": "x"} ')
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
    assert client.throttle.in_flight("ep", "run") == 0
    assert (await client.call("POST", "/v2/ep/run", {"input": {}}))[0] == 200


async def test_the_worker_api_and_health_are_never_limited(client: Client) -> None:
    client.throttle.limits = {route: RouteLimit(rate=1, concurrent=1) for route in LIMITS}
    token = await client.c.admin.worker_token("ep", "w1")
    for _ in range(5):
        assert (await client.call("GET", "/v2/ep/health"))[0] == 200
        status, _, _ = await client.call("GET", "/v2/ep/job-take/w1?gpu=x&job_in_progress=0", key=token)
        assert status == 204
        assert (await client.call("GET", "/v2/ep/ping/w1?gpu=x", key=token))[0] == 200
    assert await client.refused_total() == 0


async def test_the_runpod_sdk_backs_off_on_429_and_then_gets_its_answer(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync client's urllib3 Retry honours Retry-After on GETs: a /status
    refused while another request holds the only slot succeeds once it ends."""
    import runpod

    client.throttle.limits = {**LIMITS, "status": RouteLimit(rate=1000, concurrent=1)}
    status, out, _ = await client.call("POST", "/v2/ep/run", {"input": {"n": 1}})
    assert status == 200
    job = out["id"]
    # status-sync waits for the job to end: it holds the one "status" slot meanwhile
    holder = asyncio.create_task(client.call("GET", f"/v2/ep/status-sync/{job}?wait=60000"))
    for _ in range(500):
        if client.throttle.in_flight("ep", "status") == 1:
            break
        await asyncio.sleep(0.01)
    monkeypatch.setattr(runpod, "endpoint_url_base", client.c.url + "/v2")
    sdk_job = runpod.endpoint.runner.Job("ep", job, runpod.endpoint.runner.RunPodClient(api_key=client.key))
    asked = asyncio.create_task(asyncio.to_thread(sdk_job.status))
    for _ in range(1000):
        if await client.refused_total() >= 1:
            break
        await asyncio.sleep(0.01)
    assert await client.refused_total() == 1  # the SDK was refused and is now sleeping Retry-After
    assert (await client.call("POST", f"/v2/ep/cancel/{job}"))[0] == 200  # status-sync returns
    assert (await holder)[1]["status"] == "CANCELLED"
    assert await asked == "CANCELLED"
