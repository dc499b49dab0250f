"""The spine, end to end: the real ``runpod`` SDK (1.12.0) as client and as worker,
a real ``tide-coordinator`` process on a real etcd.

Every test makes its own endpoint and workers on the module's coordinator.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.store import EtcdStore
from tests.e2e.conftest import Cluster, WebhookReceiver
from tests.fixtures.coordinator import http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(60)]


def status_of(cluster: Cluster, ep: str, job: str) -> dict[str, Any]:
    code, body = http_json("GET", f"{cluster.url}/v2/{ep}/status/{job}", key=cluster.key)
    assert code == 200, body
    return dict(body)


def wait_status(cluster: Cluster, ep: str, job: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        out = status_of(cluster, ep, job)
        return out if out["status"] in states else None

    return dict(wait_until(check, timeout=timeout, what=f"job {job} to reach {states}"))


def test_run_then_status_and_output(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py", "w-echo")
    sdk = cluster.sdk_endpoint(ep)
    job = sdk.run({"prompt": "hi", "n": 1})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert job.output(timeout=20) == {"echo": {"prompt": "hi", "n": 1}}
    final = status_of(cluster, ep, job.job_id)
    assert final["status"] == "COMPLETED" and final["workerId"] == "w-echo"
    assert final["delayTime"] >= 0 and final["executionTime"] >= 0


def test_run_sync(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py")
    sdk = cluster.sdk_endpoint(ep)
    assert sdk.run_sync({"x": [1, 2, 3]}, timeout=30) == {"echo": {"x": [1, 2, 3]}}


def test_stream_from_a_generator_handler(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "generator.py")
    sdk = cluster.sdk_endpoint(ep)
    job = sdk.run({"n": 5, "delay": 0.3})
    chunks = list(job.stream())
    assert chunks == [{"chunk": i} for i in range(5)]
    assert job.output(timeout=10) == [{"chunk": i} for i in range(5)]  # return_aggregate_stream


def test_cancel_reaches_an_async_handler_through_job_stop(cluster: Cluster, scratch: Path) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "sleeper.py")
    sdk = cluster.sdk_endpoint(ep)
    marker = scratch / "cancelled"
    job = sdk.run({"sleep": 60, "marker": str(marker)})
    wait_status(cluster, ep, job.job_id, "IN_PROGRESS")
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    wait_until(marker.exists, timeout=15, what="the handler to see its cancellation")
    assert marker.read_text() == f"cancelled {job.job_id}"
    final = status_of(cluster, ep, job.job_id)
    assert final["status"] == "CANCELLED" and "output" not in final
    # the worker is free again
    assert sdk.run_sync({"sleep": 0.1}, timeout=30) == {"slept": 0.1}


def test_retry_of_a_failed_job(cluster: Cluster, scratch: Path) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py")
    sdk = cluster.sdk_endpoint(ep)
    job = sdk.run({"fail_once": str(scratch / "failed")})
    failed = wait_status(cluster, ep, job.job_id, "FAILED")
    assert "first attempt fails" in failed["error"]
    code, body = http_json("POST", f"{cluster.url}/v2/{ep}/retry/{job.job_id}", key=cluster.key)
    assert (code, body) == (200, {"id": job.job_id, "status": "IN_QUEUE"})
    done = wait_status(cluster, ep, job.job_id, "COMPLETED")
    assert done["output"] == {"echo": {"fail_once": str(scratch / "failed")}}
    assert "error" not in done


def test_purge_queue_and_health(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    sdk = cluster.sdk_endpoint(ep)
    jobs = [sdk.run({"i": i}) for i in range(3)]
    health = sdk.health()
    assert health["jobs"]["inQueue"] == 3
    assert set(health["workers"]) >= {"idle", "running", "initializing", "ready", "throttled", "unhealthy"}
    assert sdk.purge_queue() == {"removed": 3, "status": "completed"}
    assert {status_of(cluster, ep, j.job_id)["status"] for j in jobs} == {"CANCELLED"}
    assert sdk.health()["jobs"]["inQueue"] == 0
    cluster.worker(ep, "echo.py", "w-late")
    assert sdk.run_sync({"after": "purge"}, timeout=30) == {"echo": {"after": "purge"}}
    health = wait_until(
        lambda: (h := sdk.health())["workers"]["idle"] == 1 and h, what="the worker to show idle"
    )
    assert health["jobs"]["completed"] >= 1


def test_progress_update_visible_while_in_progress(cluster: Cluster, scratch: Path) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "progress.py")
    sdk = cluster.sdk_endpoint(ep)
    release = scratch / "release"
    job = sdk.run({"progress": "halfway", "release": str(release)})
    running = wait_until(
        lambda: (s := status_of(cluster, ep, job.job_id)).get("output") == "halfway" and s,
        what="the progress update",
    )
    assert running["status"] == "IN_PROGRESS"
    release.write_text("go")
    assert job.output(timeout=20) == {"final": True}


def test_concurrency_modifier_runs_several_jobs_on_one_worker(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    sdk = cluster.sdk_endpoint(ep)
    jobs = [sdk.run({"sleep": 1.5}) for _ in range(6)]
    cluster.worker(ep, "triple.py", "w-triple")
    outputs = [j.output(timeout=30) for j in jobs]
    spans = [(o["started"], o["finished"]) for o in outputs]
    overlap = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
    assert overlap == 3  # three at a time, never more
    assert {status_of(cluster, ep, j.job_id)["workerId"] for j in jobs} == {"w-triple"}
    log = cluster.workers[0].log_text()
    assert "Jobs in progress: 3" in log or "job-take-batch" in log or overlap == 3


def test_refresh_worker_records_stop_pod_and_completes(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    worker = cluster.worker(ep, "refresh.py", "w-refresh")
    sdk = cluster.sdk_endpoint(ep)
    assert sdk.run_sync({"a": 1}, timeout=30) == {"done": {"a": 1}}
    assert cluster.etcd is not None

    async def retired() -> Any:
        store = await EtcdStore.connect(cluster.etcd.url)  # type: ignore[union-attr]
        try:
            kv = await store.get(f"/tide/retired/{ep}/w-refresh".encode())
            return json.loads(kv.value) if kv else None
        finally:
            await store.close()

    # The retirement is written just after the job's result, which run_sync may already have seen.
    record = wait_until(lambda: asyncio.run(retired()), timeout=10, what="the retirement record")
    assert record["workerId"] == "w-refresh" and record["endpointId"] == ep
    wait_until(lambda: not worker.alive(), timeout=20, what="the refreshed worker to exit")


def test_raising_handler_fails_with_runpod_error_json(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "raising.py", "w-raise")
    sdk = cluster.sdk_endpoint(ep)
    job = sdk.run({"why": "bad input"})
    final = wait_status(cluster, ep, job.job_id, "FAILED")
    error = json.loads(final["error"])
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "boom: bad input"
    assert "Traceback" in error["error_traceback"]
    assert error["worker_id"] == "w-raise" and error["hostname"] == "w-raise-host"
    assert job.output() is None


def test_webhooks_on_completed_and_failed(cluster: Cluster, webhooks: WebhookReceiver) -> None:
    ok_ep, bad_ep = cluster.endpoint("ok"), cluster.endpoint("bad")
    cluster.worker(ok_ep, "echo.py")
    cluster.worker(bad_ep, "raising.py")
    ok_hook, bad_hook = f"{webhooks.url}/hook/ok", f"{webhooks.url}/hook/bad"
    ok_job = cluster.sdk_endpoint(ok_ep).run({"input": {"v": 1}, "webhook": ok_hook})
    bad_job = cluster.sdk_endpoint(bad_ep).run({"input": {"why": "x"}, "webhook": bad_hook})
    bodies = wait_until(lambda: len(b := webhooks.bodies()) >= 2 and b, timeout=25, what="two webhooks")
    by_id = {b["id"]: b for b in bodies}
    ok, bad = by_id[ok_job.job_id], by_id[bad_job.job_id]
    assert ok["status"] == "COMPLETED" and ok["output"] == {"echo": {"v": 1}}
    assert ok["input"] == {"v": 1} and ok["webhook"] == ok_hook
    assert {"delayTime", "executionTime", "workerId"} <= ok.keys()
    assert bad["status"] == "FAILED" and json.loads(bad["error"])["error_message"] == "boom: x"
    assert bad["input"] == {"why": "x"} and bad["webhook"] == bad_hook
    assert len(webhooks.bodies()) == 2  # each delivered once


def test_runsync_wait_returns_the_id_then_status_sync_finishes(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py")
    code, body = http_json(
        "POST", f"{cluster.url}/v2/{ep}/runsync?wait=1000", {"input": {"sleep": 4}}, key=cluster.key
    )
    assert code == 200 and body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
    assert body["id"].startswith("sync-")
    url = f"{cluster.url}/v2/{ep}/status-sync/{body['id']}?wait=20000"
    code, final = http_json("GET", url, key=cluster.key)
    assert code == 200 and final["status"] == "COMPLETED" and final["output"] == {"echo": {"sleep": 4}}


def test_large_input_and_output_go_through_the_blob_store(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py")
    sdk = cluster.sdk_endpoint(ep)
    blobs = cluster.coordinator.root / "state" / "blobs"
    before = {p.relative_to(blobs) for p in blobs.rglob("*") if p.is_file()}
    payload = {
        "text": "é" * 200_000,
        "n": list(range(2_000)),
    }  # ~410 KiB of JSON, over the 256 KiB inline limit
    assert sdk.run_sync(payload, timeout=30) == {"echo": payload}
    out = sdk.run_sync({"big": 600_000}, timeout=30)
    assert out["big"] == "y" * 600_000
    after = {p.relative_to(blobs) for p in blobs.rglob("*") if p.is_file()}
    assert len(after - before) >= 3  # the input, its echo, the big output
