"""The worker gateway (noded/_gateway.py): what may be resent, how worker env is rewritten, and
failover between two real aiohttp servers on loopback (one dead, one dying mid-call)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from noded._gateway import Gateway, GatewaySettings, gateway_env, resend_safe, worker_route


@pytest.mark.parametrize(
    ("method", "path", "safe"),
    [
        ("GET", "/v2/ep/job-take/w1", True),
        ("GET", "/v2/ep/job-take-batch/w1", True),
        ("GET", "/v2/ep/ping/w1", True),
        ("GET", "/v2/ep/job-stop/w1", True),
        ("POST", "/v2/ep/job-done/w1/j1", True),
        ("POST", "/v2/ep/job-stream/w1/j1", False),
        ("POST", "/v2/ep/run", False),
    ],
)
def test_resend_safe(method: str, path: str, safe: bool) -> None:
    assert resend_safe(method, path) is safe


@pytest.mark.parametrize(
    ("method", "raw_path", "ok"),
    [
        ("GET", "/v2/ep/job-take/w1?gpu=tide", True),
        ("GET", "/v2/ep/job-take-batch/w1?gpu=a&batch_size=3&job_in_progress=0", True),
        ("GET", "/v2/ep/ping/w1?gpu=tide&job_id=a,b", True),
        ("GET", "/v2/ep/job-stop/w1", True),
        ("POST", "/v2/ep/job-done/w1/j1?isStream=true", True),
        ("POST", "/v2/ep/job-stream/w1/j1", True),
        ("GET", "/admin/v1/keys", False),
        ("POST", "/v2/ep/run", False),
        ("GET", "/v2/ep/status/j1", False),
        ("POST", "/v2/ep/ping/w1", False),
        ("GET", "/v2/ep/job-take/w1/x", False),
        ("GET", "/v2/ep/ping/..", False),
        ("GET", "/v2/../ping/w1", False),
        ("GET", "http://other/v2/ep/ping/w1", False),
        ("GET", "//other/v2/ep/ping/w1", False),
    ],
)
def test_worker_route(method: str, raw_path: str, ok: bool) -> None:
    assert worker_route(method, raw_path) is ok


@given(st.sampled_from(["http://10.0.0.1:8420", "https://c.example:443/"]), st.text(max_size=20))
def test_gateway_env_moves_only_webhook_urls(coord: str, other: str) -> None:
    env = {
        "RUNPOD_WEBHOOK_GET_JOB": f"{coord.rstrip('/')}/v2/ep/job-take/$ID?gpu=tide",
        "RUNPOD_WEBHOOK_PING": f"{coord.rstrip('/')}/v2/ep/ping/$RUNPOD_POD_ID?gpu=tide",
        "RUNPOD_AI_API_KEY": other,
    }
    out = gateway_env(env, "http://127.0.0.1:8422")
    assert out["RUNPOD_WEBHOOK_GET_JOB"] == "http://127.0.0.1:8422/v2/ep/job-take/$ID?gpu=tide"
    assert out["RUNPOD_WEBHOOK_PING"] == "http://127.0.0.1:8422/v2/ep/ping/$RUNPOD_POD_ID?gpu=tide"
    assert out["RUNPOD_AI_API_KEY"] == other
    assert gateway_env(out, "http://127.0.0.1:8422") == out  # idempotent


def _dead_url() -> str:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _replica(name: str, hang: asyncio.Event | None = None) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def any_call(request: web.Request) -> web.Response:
        if hang is not None:
            hang.set()
            await asyncio.sleep(3600)  # a long-poll its replica dies in
        return web.json_response(
            {"by": name, "path": request.path_qs, "auth": request.headers.get("Authorization")}
        )

    app = web.Application()
    app.router.add_get("/readyz", ready)
    app.router.add_route("*", "/{tail:.*}", any_call)
    return app


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_refused_replica_is_skipped_for_every_call(http: aiohttp.ClientSession) -> None:
    good, url = await _serve(_replica("b"))
    gw, gw_url = await _serve(Gateway(GatewaySettings(upstreams=[_dead_url(), url])).app())
    try:
        for method, path in (("GET", "/v2/ep/job-take/w?x=1"), ("POST", "/v2/ep/job-stream/w/j")):
            async with http.request(method, gw_url + path, headers={"Authorization": "tok"}) as r:
                assert r.status == 200
                assert await r.json() == {"by": "b", "path": path, "auth": "tok"}
    finally:
        await gw.cleanup()
        await good.cleanup()


async def test_a_replica_dying_mid_call_resends_safe_calls_only(http: aiohttp.ClientSession) -> None:
    hang = asyncio.Event()
    dying, url_a = await _serve(_replica("a", hang))
    good, url_b = await _serve(_replica("b"))
    gw, gw_url = await _serve(Gateway(GatewaySettings(upstreams=[url_a, url_b])).app())
    try:
        take = asyncio.create_task(http.get(gw_url + "/v2/ep/job-take/w"))
        await hang.wait()
        await dying.cleanup()  # the replica dies with the long-poll open
        async with await take as r:
            assert (await r.json())["by"] == "b"
        async with http.get(gw_url + "/_gateway/healthz") as r:
            health = await r.json()
        assert health["healthy"] == [url_b] and health["resent"] >= 1
    finally:
        await gw.cleanup()
        await good.cleanup()
