"""End-to-end fixtures: a real etcd, a real ``tide-coordinator`` process on it,
unmodified RunPod workers, the real ``runpod`` SDK as client.

``cluster`` is per test on a module-wide coordinator: each test gets its own
endpoints (unique names) and its own workers, killed when it ends.  Fault tests
that restart etcd or the coordinator build their own with ``own_cluster``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fixtures.coordinator import CoordinatorProcess, RunpodWorker
from tests.fixtures.etcd import ETCD_MISSING, EtcdServer, etcd_binary


class Cluster:
    """One coordinator (and its etcd) as a test sees it."""

    def __init__(self, coordinator: CoordinatorProcess, etcd: EtcdServer | None) -> None:
        self.coordinator = coordinator
        self.etcd = etcd
        self.admin = coordinator.admin
        self.key = self.admin.create_key(f"client-{uuid.uuid4().hex[:6]}")["key"]
        self.workers: list[RunpodWorker] = []

    @property
    def url(self) -> str:
        return self.coordinator.url

    def endpoint(self, prefix: str = "ep", **spec: Any) -> str:
        return self.admin.create_endpoint(f"{prefix}-{uuid.uuid4().hex[:8]}", **spec)

    def worker(self, ep: str, handler: str, worker_id: str | None = None, **env: str) -> RunpodWorker:
        worker_id = worker_id or f"w-{uuid.uuid4().hex[:8]}"
        token = self.admin.worker_token(ep, worker_id)
        w = RunpodWorker(self.url, ep, worker_id, token, handler, env=env)
        self.workers.append(w)
        return w.start()

    def sdk_endpoint(self, ep: str) -> Any:
        import runpod

        runpod.endpoint_url_base = self.url + "/v2"  # captured by each Endpoint's client
        return runpod.Endpoint(ep, api_key=self.key)

    def close_workers(self) -> None:
        for w in self.workers:
            w.cleanup()
        self.workers.clear()

    def logs(self) -> str:
        parts = [f"--- coordinator ---\n{self.coordinator.log_tail(6000)}"]
        parts += [f"--- worker {w.worker} ---\n{w.log_text()[-3000:]}" for w in self.workers]
        return "\n".join(parts)


def _etcd() -> EtcdServer:
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    server = EtcdServer()
    server.start()
    return server


@pytest.fixture(scope="module")
def module_cluster() -> Iterator[Cluster]:
    etcd = _etcd()
    coordinator = CoordinatorProcess(store_url=f"etcd://127.0.0.1:{etcd.client_port}", claim_grace_s=3.0)
    try:
        coordinator.start()
        yield Cluster(coordinator, etcd)
    finally:
        coordinator.cleanup()
        etcd.stop()


@pytest.fixture
def cluster(module_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield module_cluster
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(module_cluster.logs())
    module_cluster.close_workers()


@pytest.fixture
def own_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A fresh etcd and coordinator for one test (fault tests restart them)."""
    etcd = _etcd()
    coordinator = CoordinatorProcess(store_url=f"etcd://127.0.0.1:{etcd.client_port}", claim_grace_s=3.0)
    c: Cluster | None = None
    try:
        coordinator.start()
        c = Cluster(coordinator, etcd)
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(c.logs())
    finally:
        if c is not None:
            c.close_workers()
        coordinator.cleanup()
        etcd.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


class WebhookReceiver:
    """An aiohttp server on loopback, in its own thread, that records what it is sent."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.received: list[Any] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.received.append(body)
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.host}:{port}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def bodies(self) -> list[Any]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from tests.fixtures.faults import terminal_summary

    terminal_summary(terminalreporter, config)
