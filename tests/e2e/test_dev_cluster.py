"""``tide dev`` end to end: the all-in-one cluster in a subprocess (coordinator + node agents with
simulated GPUs + the process runtime), unmodified RunPod handlers as workers, the ``runpod`` SDK as
client.  What a user of ``tide dev`` sees: scale from zero and back, GPU priority fallback,
multi-GPU workers, a killed worker's job finishing anyway, logs, usage, and why a job waits.

Tests never assert on timing: they wait (bounded) for states.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess, runtime_workers
from tests.fixtures.coordinator import REPO_ROOT, http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"  # examples/echo/handler.py, unmodified
HANDLERS = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers'}"
H100, RTX = "H100-80GB", "RTXPRO6000-96GB"


class Dev:
    """One ``tide dev`` as a test drives it: endpoints, the SDK, workers as the admin API and the
    runtime's state dir show them."""

    def __init__(self, proc: DevClusterProcess) -> None:
        self.proc = proc
        self.admin = proc.admin
        self.key = str(self.admin.create_key(f"client-{uuid.uuid4().hex[:6]}")["key"])
        self.endpoints: list[str] = []

    def endpoint(self, **spec: Any) -> str:
        name = f"ep-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "image": ECHO, "workersMin": 0, "idleTimeout": 2, **spec}
        self.admin.call("POST", "/admin/v1/endpoints", body)
        self.endpoints.append(name)
        return name

    def sdk(self, ep: str) -> Any:
        import runpod

        runpod.endpoint_url_base = self.proc.url + "/v2"  # read when the Endpoint is made
        return runpod.Endpoint(ep, api_key=self.key)

    def status(self, ep: str, job_id: str) -> dict[str, Any]:
        code, body = http_json("GET", f"{self.proc.url}/v2/{ep}/status/{job_id}", key=self.key)
        assert code == 200, body
        return dict(body)

    def wait_status(self, ep: str, job_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status(ep, job_id)
            return st if st["status"] in states else None

        return dict(wait_until(check, timeout=timeout, what=f"job {job_id} in {states}"))

    def workers(self, ep: str) -> list[dict[str, Any]]:
        return list(self.admin.call("GET", f"/admin/v1/workers?endpoint={ep}"))

    def wait_workers(self, ep: str, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            found = self.workers(ep)
            return found if len(found) == n else None

        return list(wait_until(check, timeout=timeout, what=f"{n} workers of {ep}"))

    def live(self, ep: str) -> list[Any]:
        """Worker processes of ``ep`` alive on any node (the runtime's own records)."""
        return [
            w
            for w in runtime_workers(self.proc.state_dir)
            if w.labels.get("tide.endpoint") == ep and w.alive()
        ]

    def wait_gone(self, ep: str, timeout: float = 30.0) -> None:
        wait_until(
            lambda: not self.workers(ep) and not self.live(ep),
            timeout=timeout,
            what=f"every worker of {ep} to stop",
        )

    def delete_all(self) -> None:
        for ep in self.endpoints:
            self.admin.call("DELETE", f"/admin/v1/endpoints/{ep}")
        for ep in self.endpoints:
            self.wait_gone(ep)
        self.endpoints.clear()


def _cluster(nodes: int, gpus: str) -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(nodes=nodes, gpus=gpus, claim_grace_s=3.0, lost_after_s=5.0)
    try:
        proc.start()
        yield proc
    finally:
        proc.cleanup()


@pytest.fixture(scope="module")
def dev_proc() -> Iterator[DevClusterProcess]:
    """One node: 1 H100 and 2 RTX PRO 6000 (the fallback test needs a single H100)."""
    yield from _cluster(1, f"1x{H100},2x{RTX}")


@pytest.fixture
def dev(dev_proc: DevClusterProcess, request: pytest.FixtureRequest) -> Iterator[Dev]:
    d = Dev(dev_proc)
    yield d
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(dev_proc.log_tail(8000))
    d.delete_all()  # every GPU is free again for the next test


def test_scales_from_zero_to_max_under_a_burst_and_back_to_zero(dev: Dev) -> None:
    ep = dev.endpoint(workersMax=3, scalerType="REQUEST_COUNT", scalerValue=1)
    assert dev.workers(ep) == []
    sdk = dev.sdk(ep)

    assert sdk.run_sync({"hi": 1}, timeout=60) == {"echo": {"hi": 1}}  # 0 -> 1 on the first request

    jobs = [sdk.run({"sleep": 2, "i": i}) for i in range(6)]
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        peak = max(peak, len(dev.workers(ep)))
        return all(dev.status(ep, j.job_id)["status"] == "COMPLETED" for j in jobs)

    wait_until(all_done, timeout=45, interval=0.2, what="the burst to complete")
    assert [j.output() for j in jobs] == [{"echo": {"sleep": 2, "i": i}} for i in range(6)]
    assert peak == 3  # toward workersMax, never past it
    assert len({dev.status(ep, j.job_id)["workerId"] for j in jobs}) > 1

    dev.wait_gone(ep)  # idleTimeout 2: back to zero, processes included
    assert dev.admin.call("GET", f"/admin/v1/endpoints/{ep}")["health"]["jobs"]["completed"] == 7


def test_gpu_priority_falls_back_when_the_first_type_is_full(dev: Dev) -> None:
    ep = dev.endpoint(gpuTypeIds=[H100, RTX], workersMax=2, scalerType="REQUEST_COUNT", scalerValue=1)
    sdk = dev.sdk(ep)
    jobs = [sdk.run({"sleep": 3, "i": i}) for i in range(2)]
    placed = dev.wait_workers(ep, 2)
    assert sorted(w["gpuType"] for w in placed) == [H100, RTX]  # the only H100, then the next type
    for j in jobs:
        assert dev.wait_status(ep, j.job_id, "COMPLETED")["output"]["echo"]["sleep"] == 3

    usage = dev.admin.call("GET", f"/admin/v1/usage?endpoint={ep}")
    seconds = {row["gpuType"]: row["gpuSeconds"] for row in usage["rows"]}
    assert set(seconds) == {H100, RTX}
    assert all(s > 0 for s in seconds.values())
    assert usage["totalGpuSeconds"] > 0 and usage["totalCost"] > 0


def test_killed_worker_is_restarted_and_its_job_completes(dev: Dev) -> None:
    ep = dev.endpoint(workersMax=1, idleTimeout=5, scalerType="REQUEST_COUNT", scalerValue=1)
    job = dev.sdk(ep).run({"sleep": 3, "tag": "survivor"})
    running = dev.wait_status(ep, job.job_id, "IN_PROGRESS")
    victim = next(w for w in runtime_workers(dev.proc.state_dir) if w.id == running["workerId"])
    assert victim.alive()

    os.kill(victim.pid, signal.SIGKILL)  # the handler process only; its shim notices

    done = dev.wait_status(ep, job.job_id, "COMPLETED", "FAILED", timeout=45)
    assert done["status"] == "COMPLETED"
    assert done["output"] == {"echo": {"sleep": 3, "tag": "survivor"}}
    assert not victim.alive()
    survivors = dev.live(ep)
    assert survivors and all(w.pid != victim.pid for w in survivors)
    restarted = [w for w in dev.workers(ep) if w["workerId"] == victim.id]
    replaced = [w for w in dev.workers(ep) if w["workerId"] != victim.id]
    assert (restarted and restarted[0]["restarts"] >= 1) or replaced

    jobs = dev.admin.call("GET", f"/admin/v1/endpoints/{ep}/jobs")["jobs"]
    assert next(j for j in jobs if j["id"] == job.job_id)["retries"] >= 1  # requeued, not lost


def test_worker_logs_are_retrievable(dev: Dev) -> None:
    ep = dev.endpoint(
        image=HANDLERS,
        command=["python", "-u", "visible_devices.py"],
        gpuTypeIds=[RTX],
        workersMax=1,
        idleTimeout=30,  # still there when we ask for its logs
    )
    out = dev.sdk(ep).run_sync({"sleep": 0}, timeout=60)
    worker = out["pod"]
    logs = dev.admin.call("GET", f"/admin/v1/workers/{worker}/logs?tail=200")
    assert logs["workerId"] == worker
    assert f"visible devices: {out['cuda']}" in logs["lines"]


def test_nothing_fits_so_the_job_waits_and_says_why(dev: Dev) -> None:
    ep = dev.endpoint(gpuTypeIds=["B200-180GB"], workersMax=1)
    sdk = dev.sdk(ep)
    job = sdk.run({"never": "placed"})

    described = wait_until(
        lambda: (d := dev.admin.call("GET", f"/admin/v1/endpoints/{ep}"))["placement"] and d,
        timeout=20,
        what="a placement reason",
    )
    assert "B200-180GB" in described["placement"]
    health = sdk.health()
    assert health["reason"] == described["placement"]
    assert health["jobs"]["inQueue"] == 1
    assert job.status() == "IN_QUEUE"
    assert dev.workers(ep) == []
    job.cancel()


@pytest.fixture
def two_nodes(request: pytest.FixtureRequest) -> Iterator[Dev]:
    for proc in _cluster(2, f"2x{H100}"):
        d = Dev(proc)
        yield d
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(proc.log_tail(8000))


def test_two_gpu_workers_get_both_gpus_of_one_host(two_nodes: Dev) -> None:
    dev = two_nodes
    ep = dev.endpoint(
        image=HANDLERS,
        command=["python", "-u", "visible_devices.py"],
        gpuCount=2,
        workersMax=2,
        scalerType="REQUEST_COUNT",
        scalerValue=1,
    )
    sdk = dev.sdk(ep)
    jobs = [sdk.run({"sleep": 3}) for _ in range(2)]
    placed = dev.wait_workers(ep, 2)
    nodes = dev.admin.call("GET", "/admin/v1/nodes")
    gpus_of = {n["id"]: sorted(g["uuid"] for g in n["inventory"]["gpus"]) for n in nodes}
    assert sorted(w["nodeId"] for w in placed) == sorted(gpus_of)  # one such worker per host
    for w in placed:
        assert sorted(w["devices"]) == gpus_of[w["nodeId"]]  # both GPUs of its host

    devices = {w["workerId"]: w["devices"] for w in placed}
    for j in jobs:
        out = j.output(timeout=45)
        assert out["cuda"].split(",") == devices[out["pod"]]  # what the handler sees is what it got
