"""Faults, end to end: workers killed with SIGKILL, the coordinator restarted or
crashed, etcd restarted, jobs that run too long.  Nothing accepted with a 200
is lost.  The coordinator runs with a 3 s claim grace and workers ping every 1 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.fixtures.coordinator import http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(60)]


def status_of(cluster: Cluster, ep: str, job: str) -> dict[str, Any]:
    code, body = http_json("GET", f"{cluster.url}/v2/{ep}/status/{job}", key=cluster.key)
    assert code == 200, body
    return dict(body)


def wait_status(cluster: Cluster, ep: str, job: str, *states: str, timeout: float = 25.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        out = status_of(cluster, ep, job)
        return out if out["status"] in states else None

    return dict(wait_until(check, timeout=timeout, what=f"job {job} to reach {states}"))


def submit(cluster: Cluster, ep: str, job_input: Any, **extra: Any) -> str:
    code, body = http_json(
        "POST", f"{cluster.url}/v2/{ep}/run", {"input": job_input, **extra}, key=cluster.key
    )
    assert code == 200, body
    return str(body["id"])


def test_killed_worker_job_is_requeued_and_completed_elsewhere(cluster: Cluster) -> None:
    ep = cluster.endpoint()
    first = cluster.worker(ep, "echo.py", "w-doomed")
    job = submit(cluster, ep, {"sleep": 2, "tag": "survivor"})
    running = wait_status(cluster, ep, job, "IN_PROGRESS")
    assert running["workerId"] == "w-doomed"
    first.kill()
    cluster.worker(ep, "echo.py", "w-rescuer")
    final = wait_status(cluster, ep, job, "COMPLETED")
    assert final["retries"] == 1
    assert final["workerId"] == "w-rescuer"
    assert final["output"] == {"echo": {"sleep": 2, "tag": "survivor"}}


def test_job_whose_workers_keep_dying_fails_with_a_clear_error(cluster: Cluster) -> None:
    ep = cluster.endpoint(maxJobRetries=1)
    job = submit(cluster, ep, {"sleep": 60})
    for attempt in range(2):
        worker = cluster.worker(ep, "sleeper.py", f"w-dies-{attempt}")
        running = wait_status(cluster, ep, job, "IN_PROGRESS")
        assert running["workerId"] == worker.worker
        worker.kill()
        if attempt == 0:
            assert wait_status(cluster, ep, job, "IN_QUEUE")["retries"] == 1
    final = wait_status(cluster, ep, job, "FAILED")
    assert "was lost" in final["error"] and "w-dies-1" in final["error"]
    assert "gave up after 2 attempts" in final["error"]


def test_execution_timeout_times_out_and_stops_the_worker(cluster: Cluster, scratch: Path) -> None:
    ep = cluster.endpoint()
    cluster.worker(ep, "sleeper.py")
    marker = scratch / "stopped"
    job = submit(cluster, ep, {"sleep": 60, "marker": str(marker)}, policy={"executionTimeout": 5000})
    final = wait_status(cluster, ep, job, "TIMED_OUT")
    assert "execution timeout of 5000 ms" in final["error"]
    wait_until(marker.exists, timeout=10, what="the worker to stop the timed-out job")
    assert marker.read_text() == f"cancelled {job}"
    assert status_of(cluster, ep, job)["status"] == "TIMED_OUT"


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_coordinator_restart_mid_job_loses_nothing(own_cluster: Cluster, how: str) -> None:
    cluster = own_cluster
    ep = cluster.endpoint()
    for i in range(2):
        cluster.worker(ep, "echo.py", f"w-{i}")
    jobs = [submit(cluster, ep, {"sleep": 1, "i": i}) for i in range(8)]
    wait_until(
        lambda: any(status_of(cluster, ep, j)["status"] == "IN_PROGRESS" for j in jobs),
        what="a job to start",
    )
    if how == "crash":
        cluster.coordinator.kill()
        cluster.coordinator.start()
    else:
        cluster.coordinator.restart()
    jobs += [submit(cluster, ep, {"sleep": 0.1, "after": how})]
    for i, job in enumerate(jobs):
        final = wait_status(cluster, ep, job, "COMPLETED", timeout=40)
        assert final["output"]["echo"]["i" if i < 8 else "after"] == (i if i < 8 else how)


def test_etcd_restart_with_the_coordinator_running(own_cluster: Cluster) -> None:
    cluster = own_cluster
    assert cluster.etcd is not None
    ep = cluster.endpoint()
    cluster.worker(ep, "echo.py", "w-steady")
    before = submit(cluster, ep, {"sleep": 2, "when": "before"})
    wait_status(cluster, ep, before, "IN_PROGRESS")
    cluster.etcd.restart(down_for=1.0)
    wait_until(
        lambda: http_json("GET", f"{cluster.url}/readyz")[0] == 200,
        what="the coordinator to be ready again",
    )
    after = submit(cluster, ep, {"when": "after"})
    assert wait_status(cluster, ep, after, "COMPLETED")["output"] == {"echo": {"when": "after"}}
    assert wait_status(cluster, ep, before, "COMPLETED")["output"] == {"echo": {"sleep": 2, "when": "before"}}
