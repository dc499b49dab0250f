"""What a coordinator restart must not reset or cut short (issue 12, minor items), over
real HTTP against a coordinator process on a real etcd:

- /v2/<ep>/health's job counters survive a graceful restart and a SIGKILL (the leader
  stores them every few seconds, and once more when it stops);
- a removed worker is billed until its host reports the process gone, not from the
  moment the scheduler unassigned it, and a restart in between does not lose that;
- moving the token secret from etcd to a file: tokens minted before are refused.

The host is played by the test over the node API (register, heartbeats with worker
reports), so the worker's exit is whatever the test says it is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from coordinator._node_schema import UsageRecord, nkeys
from coordinator.store import open_store
from coordinator.view import JOBSTATS, JobStatsRecord
from tests.fixtures.coordinator import CoordinatorProcess, http_json, wait_until
from tests.fixtures.etcd import EtcdServer, etcd_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(etcd_binary() is None, reason="etcd binary not installed (apt install etcd-server)"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[EtcdServer, CoordinatorProcess]]:
    with EtcdServer() as etcd:
        proc = CoordinatorProcess(store_url=etcd.url.replace("http://", "etcd://"), take_wait_s=1.0)
        try:
            proc.start()
            yield etcd, proc
        finally:
            proc.cleanup()


def _stored(etcd: EtcdServer, key: bytes) -> bytes | None:
    async def read() -> bytes | None:
        store = open_store(etcd.url)
        try:
            kv = await store.get(key)
            return kv.value if kv else None
        finally:
            await store.close()

    return asyncio.run(read())


def _call(proc: CoordinatorProcess, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
    status, payload = http_json(method, proc.url + path, body, key=key or proc.admin_key)
    assert status < 300, (method, path, status, payload)
    return payload


def _health(proc: CoordinatorProcess, ep: str) -> dict[str, int]:
    jobs: dict[str, int] = _call(proc, "GET", f"/v2/{ep}/health")["jobs"]
    return {k: jobs[k] for k in ("completed", "failed", "retried")}


def _finish(proc: CoordinatorProcess, ep: str, token: str, result: dict[str, Any]) -> None:
    job = _call(proc, "GET", f"/v2/{ep}/job-take/w1?job_in_progress=0", key=token)
    _call(proc, "POST", f"/v2/{ep}/job-done/w1/{job['id']}?isStream=false", result, key=token)


def test_health_counters_survive_a_restart_and_a_kill(cluster: tuple[EtcdServer, CoordinatorProcess]) -> None:
    etcd, proc = cluster
    admin = proc.admin
    admin.create_endpoint("hc")
    token = admin.worker_token("hc", "w1")
    for result in ({"output": 1}, {"output": 2}, {"error": "boom"}):
        _call(proc, "POST", "/v2/hc/run", {"input": {}})
        _finish(proc, "hc", token, result)
    want = {"completed": 2, "failed": 1, "retried": 0}
    wait_until(lambda: _health(proc, "hc") == want, what="the counters")

    proc.restart()  # SIGTERM: the leader stores the counters on its way out
    assert _health(proc, "hc") == want

    _call(proc, "POST", "/v2/hc/run", {"input": {}})
    _finish(proc, "hc", token, {"output": 3})
    want = {"completed": 3, "failed": 1, "retried": 0}
    wait_until(lambda: _health(proc, "hc") == want, what="the fourth job counted")

    def stored() -> bool:
        raw = _stored(etcd, JOBSTATS + b"hc")
        return raw is not None and msgspec.json.decode(raw, type=JobStatsRecord).completed == 3

    wait_until(stored, timeout=30, interval=0.5, what="the leader to store the counters")
    proc.kill()  # no goodbye this time: what was stored is what a new process starts from
    proc.start()
    assert _health(proc, "hc") == want


class FakeHost:
    """A GPU host over the node API: registered, heartbeating every 0.5 s with ``workers``."""

    def __init__(self, proc: CoordinatorProcess, name: str) -> None:
        self.proc = proc
        self.name = name
        self.inventory = {
            "hostname": name,
            "region": "EU",
            "gpus": [{"index": 0, "uuid": f"GPU-{name}", "type_id": "H100-80GB", "memory_mb": 81559}],
            "cpus": 64,
            "memory_bytes": 512 << 30,
        }
        reg = _call(proc, "POST", "/node/v1/register", {"inventory": self.inventory})
        self.token = reg["token"]
        self.workers: list[dict[str, Any]] = []
        self.beats_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(0.5):
            body = {"inventory": self.inventory, "workers": list(self.workers)}
            url = f"{self.proc.url}/node/v1/nodes/{self.name}/heartbeat"
            try:
                if http_json("POST", url, body, key=self.token, timeout=5)[0] == 200:
                    self.beats_sent += 1
            except OSError:
                pass  # the coordinator is restarting

    def beats_after(self, n: int) -> int:
        """Wait for two more heartbeats than ``n`` (one may have been in flight)."""
        return int(wait_until(lambda: self.beats_sent >= n + 2 and self.beats_sent, what="heartbeats"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _usage(etcd: EtcdServer, worker: str) -> UsageRecord | None:
    raw = _stored(etcd, nkeys.usage(worker))
    return msgspec.json.decode(raw, type=UsageRecord) if raw else None


def test_a_removed_worker_is_billed_until_its_process_exits(
    cluster: tuple[EtcdServer, CoordinatorProcess],
) -> None:
    etcd, proc = cluster
    host = FakeHost(proc, "meter-host")
    try:
        proc.admin.create_endpoint("meter", workersMin=1, workersMax=1, gpuTypeIds=["H100-80GB"])
        [worker] = wait_until(
            lambda: _call(proc, "GET", "/admin/v1/workers?endpoint=meter"), what="placement"
        )
        wid = worker["workerId"]
        host.workers = [{"worker_id": wid, "endpoint_id": "meter", "state": "running"}]

        _call(proc, "POST", "/admin/v1/nodes/meter-host/drain")  # the scheduler removes the worker
        removed = wait_until(lambda: (u := _usage(etcd, wid)) and u.unassigned_at and u, what="removal")
        assert removed.stopped_at == 0.0  # still billed: noded has not stopped it yet
        host.workers = [{"worker_id": wid, "endpoint_id": "meter", "state": "stopping"}]

        proc.restart()  # the new leader picks the open record up from the store
        host.beats_after(host.beats_sent)
        time.sleep(2.0)  # a few metering passes, every one seeing the process alive
        still = _usage(etcd, wid)
        assert still is not None and still.stopped_at == 0.0

        exited_by = time.time()
        host.workers = []  # noded's report: the process is gone
        closed = wait_until(lambda: (u := _usage(etcd, wid)) and u.stopped_at and u, what="the close")
        assert closed.stopped_at >= exited_by > closed.unassigned_at
        usage = _call(proc, "GET", "/admin/v1/usage?endpoint=meter")
        assert usage["totalGpuSeconds"] >= closed.stopped_at - closed.started_at - 1.0
    finally:
        host.stop()


def test_moving_the_token_secret_off_etcd_refuses_old_tokens(
    cluster: tuple[EtcdServer, CoordinatorProcess],
) -> None:
    """A legacy coordinator (no token-secret-file) mints with etcd's /tide/secret; once it
    restarts with the file, those tokens are refused and fresh ones work (docs/secrets.md)."""
    etcd, proc = cluster
    config = proc.config_path.read_text()
    secret_line = f'token-secret-file = "{proc.token_secret_file}"\n'
    assert secret_line in config
    try:
        proc.config_path.write_text(config.replace(secret_line, ""))
        proc.restart()
        proc.admin.create_endpoint("mig")
        old = proc.admin.worker_token("mig", "w1")
        assert _stored(etcd, b"/tide/secret") is not None
        take = f"{proc.url}/v2/mig/job-take/w1?job_in_progress=0"
        assert http_json("GET", take, key=old)[0] in (200, 204)
    finally:
        proc.config_path.write_text(config)
        proc.restart()
    assert http_json("GET", take, key=old)[0] == 401
    fresh = proc.admin.worker_token("mig", "w1")
    assert fresh != old and http_json("GET", take, key=fresh)[0] in (200, 204)
