"""Tide's fast worker (issue 17) under an unmodified runpod worker with ``concurrency_modifier`` > 1:
every job runs exactly once and completes with its own output.  Correctness only, no timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tests.fixtures.coordinator import http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(90)]


def _submit(cluster: Cluster, ep: str, n: int) -> str:
    code, body = http_json(
        "POST", f"{cluster.url}/v2/{ep}/run", {"input": {"n": n, "max_sleep": 0.02}}, key=cluster.key
    )
    assert code == 200, body
    return str(body["id"])


def _output(cluster: Cluster, ep: str, job: str) -> object:
    code, body = http_json("GET", f"{cluster.url}/v2/{ep}/status/{job}", key=cluster.key)
    assert code == 200, body
    return body.get("output") if body["status"] == "COMPLETED" else None


@pytest.mark.parametrize("fast", ["1", "0"])
def test_no_job_lost_or_run_twice_with_concurrency(cluster: Cluster, scratch: Path, fast: str) -> None:
    ep = cluster.endpoint()
    runs = scratch / "runs.txt"
    cluster.worker(ep, "concurrency.py", RUNS_FILE=str(runs), CONCURRENCY="8", TIDE_FAST_WORKER=fast)
    jobs = {_submit(cluster, ep, n): n for n in range(80)}
    pending = dict(jobs)
    wait_until(
        lambda: runs.exists() and len(runs.read_text().splitlines()) > len(jobs),
        timeout=60,
        what="every job to run",
    )

    def all_done() -> bool:
        for job, n in list(pending.items()):
            out = _output(cluster, ep, job)
            if out is not None:
                assert out == {"n": n}, (job, out)
                del pending[job]
        return not pending

    wait_until(all_done, timeout=60, what="every job to complete")
    lines = runs.read_text().splitlines()
    assert lines[0] == ("fast True" if fast == "1" else "fast False")
    ran = lines[1:]
    assert sorted(ran) == sorted(jobs)  # each job ran, and only once
