"""Batches end to end: a real etcd, a real coordinator process, unmodified runpod workers.

One module-wide coordinator (small shards, a fast dispatcher pass) serves every test here;
each test makes its own endpoint and workers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, _etcd
from tests.fixtures.coordinator import CoordinatorProcess, http_json, wait_until

ECHO = "echo.py"
_CONFIG = "\n[batch]\nshard-size = 40\ntick-s = 0.2\nprefetch = 4\n\n[prices]\nunknown = 3.6\n"


@pytest.fixture(scope="module")
def batch_cluster() -> Iterator[Cluster]:
    etcd = _etcd()
    coordinator = CoordinatorProcess(
        store_url=f"etcd://127.0.0.1:{etcd.client_port}", claim_grace_s=3.0, extra_config=_CONFIG
    )
    try:
        coordinator.start()
        c = Cluster(coordinator, etcd)
        yield c
        print(c.logs())  # shown when a test failed
        c.close_workers()
    finally:
        coordinator.cleanup()
        etcd.stop()


def _call(c: Cluster, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, answer = http_json(method, c.url + path, body, key=c.key, **kw)
    assert status < 300, (status, answer)
    return answer


def _jsonl(c: Cluster, ep: str, lines: list[str], query: str) -> dict[str, Any]:
    raw = ("\n".join(lines) + "\n").encode()
    headers = {"Content-Type": "application/x-ndjson"}
    return dict(_call(c, "POST", f"/v2/{ep}/batch?{query}", raw=raw, headers=headers))


def _results(c: Cluster, ep: str, batch: str) -> list[dict[str, Any]]:
    status, text = http_json("GET", f"{c.url}/v2/{ep}/batch/{batch}/results", key=c.key)
    assert status == 200, text
    return [json.loads(line) for line in str(text).splitlines() if line]


def test_a_jsonl_batch_completes_with_a_worker_killed_midway(batch_cluster: Cluster) -> None:
    c = batch_cluster
    ep = c.endpoint("batch", workersMax=6)
    n = 240  # the runpod SDK takes about one job a second per worker (rp_scale sleeps 1 s when full)
    lines = [json.dumps({"input": {"i": i, "sleep": 0.01}}) for i in range(n)]
    lines.insert(17, "{not json")  # fails alone, with its line number
    ref = _jsonl(c, ep, lines, "slaHours=2&name=nightly&finalize=true")
    assert ref["status"] == "FINALIZED"
    doomed = c.worker(ep, ECHO)
    for _ in range(4):
        c.worker(ep, ECHO)

    def progressed() -> bool:
        summary = _call(c, "GET", f"/v2/{ep}/batch/{ref['id']}")
        return int(summary["requestCompleted"]) >= 60

    wait_until(progressed, timeout=60, what="a fifth of the batch")
    doomed.kill()  # mid-batch: its claimed requests go back to the queue
    c.worker(ep, ECHO)

    def finished() -> dict[str, Any] | None:
        summary = dict(_call(c, "GET", f"/v2/{ep}/batch/{ref['id']}"))
        return summary if summary.get("finishedAt") else None

    summary = wait_until(finished, timeout=240, what="the batch to finish")
    assert summary["requestTotal"] == n + 1
    assert (summary["requestCompleted"], summary["requestFailed"]) == (n, 1)
    assert summary["sla"]["hours"] == 2 and not summary["sla"]["atRisk"]
    cost = summary["cost"]
    assert cost["requestsRun"] >= n and cost["gpuSeconds"]["unknown"] > 0
    assert cost["usd"] == pytest.approx(cost["gpuSeconds"]["unknown"] / 3600 * 3.6, rel=1e-3)
    results = _results(c, ep, ref["id"])
    assert len(results) == n + 1 and len({r["id"] for r in results}) == n + 1
    bad = [r for r in results if r["status"] == "FAILED"]
    assert len(bad) == 1 and "line 18" in bad[0]["error"]
    echoed = sorted(r["output"]["echo"]["i"] for r in results if r["status"] == "COMPLETED")
    assert echoed == list(range(n))  # nothing lost, nothing twice in the results
    page = _call(c, "GET", f"/v2/{ep}/batch/{ref['id']}/requests?offset=230&limit=50")
    assert (page["total"], len(page["requests"]), page["hasMore"]) == (n + 1, 11, False)


def test_the_runpod_shape_draft_append_delete_finalize(batch_cluster: Cluster) -> None:
    c = batch_cluster
    ep = c.endpoint("batch")
    ref = _call(c, "POST", f"/v2/{ep}/batch", [{"input": {"i": 0}}])
    assert ref["status"] == "DRAFT" and ref["id"].startswith("batch_")
    _call(
        c, "POST", f"/v2/{ep}/batch/{ref['id']}/requests", {"requests": [{"input": {"i": i}} for i in (1, 2)]}
    )
    page = _call(c, "GET", f"/v2/{ep}/batch/{ref['id']}/requests")
    assert [r["status"] for r in page["requests"]] == ["IN_QUEUE"] * 3
    _call(c, "DELETE", f"/v2/{ep}/batch/{ref['id']}/requests/{page['requests'][1]['id']}")
    _call(c, "PUT", f"/v2/{ep}/batch/{ref['id']}", {"slaHours": 1})
    assert _call(c, "POST", f"/v2/{ep}/batch/{ref['id']}/finalize")["status"] == "FINALIZED"
    status, err = http_json("POST", f"{c.url}/v2/{ep}/batch/{ref['id']}/finalize", key=c.key)
    assert status == 409 and "FINALIZED" in err["error"]
    status, err = http_json(
        "POST", f"{c.url}/v2/{ep}/batch/{ref['id']}/requests", {"requests": []}, key=c.key
    )
    assert status == 409
    c.worker(ep, ECHO)
    summary = wait_until(
        lambda: (s := _call(c, "GET", f"/v2/{ep}/batch/{ref['id']}")).get("finishedAt") and s, timeout=60
    )
    assert (summary["requestTotal"], summary["requestCompleted"]) == (2, 2)
    listed = _call(c, "GET", f"/v2/{ep}/batch")
    assert [b["id"] for b in listed] == [ref["id"]]


def test_cancel_bills_nothing_queued_and_bad_ids_are_404(batch_cluster: Cluster) -> None:
    c = batch_cluster
    ep = c.endpoint("batch")
    ref = _jsonl(c, ep, [json.dumps({"input": i}) for i in range(100)], "finalize=true")
    assert _call(c, "POST", f"/v2/{ep}/batch/{ref['id']}/cancel")["id"] == ref["id"]
    summary = wait_until(
        lambda: (s := _call(c, "GET", f"/v2/{ep}/batch/{ref['id']}"))["status"] == "CANCELLED" and s,
        timeout=30,
    )
    assert summary["requestCancelled"] == 100 and summary["cost"]["requestsRun"] == 0
    status, err = http_json("POST", f"{c.url}/v2/{ep}/batch/{ref['id']}/cancel", key=c.key)
    assert status == 409 and "cancelled already" in err["error"]
    assert {r["status"] for r in _results(c, ep, ref["id"])} == {"CANCELLED"}
    status, err = http_json("GET", f"{c.url}/v2/{ep}/batch/batch_{uuid.uuid4().hex[:16]}", key=c.key)
    assert status == 404 and "not found" in err["error"]
    status, err = http_json("POST", f"{c.url}/v2/{ep}/batch", {"input": 1}, key=c.key)
    assert status == 400
