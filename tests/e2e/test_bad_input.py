"""Bad input, end to end against a real coordinator on etcd: every mistake gets a
4xx with a JSON ``{"error": "..."}`` that names what to fix, never a 5xx, and
the jobs that were accepted along the way all complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.fixtures.coordinator import http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(60)]

MB = 1024 * 1024


class Probe:
    """Sends requests, checks the error shape, remembers accepted jobs."""

    def __init__(self, cluster: Cluster, ep: str) -> None:
        self.c = cluster
        self.ep = ep
        self.accepted: list[str] = []

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        key: str | None = None,
        auth: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth} if auth is not None else None
        use_key = None if auth is not None else (self.c.key if key is None else key)
        code, out = http_json(method, self.c.url + path, body, raw=raw, key=use_key or None, headers=headers)
        assert code < 500, (method, path, code, out)
        if code == 200 and isinstance(out, dict) and "id" in out and out.get("status") == "IN_QUEUE":
            self.accepted.append(out["id"])
        return code, out

    def error(self, code: int, method: str, path: str, *words: str, **kwargs: Any) -> str:
        got, out = self.send(method, path, **kwargs)
        assert got == code, (method, path, got, out)
        assert isinstance(out, dict) and isinstance(out.get("error"), str) and out["error"], out
        for word in words:
            assert word.lower() in out["error"].lower(), (word, out["error"])
        return str(out["error"])


@pytest.fixture
def probe(cluster: Cluster) -> Iterator[Probe]:
    ep = cluster.endpoint("bad")
    p = Probe(cluster, ep)
    code, out = p.send("POST", f"/v2/{ep}/run", {"input": {"first": True}})
    assert code == 200, out
    yield p
    # every job accepted along the way completes once a worker shows up
    cluster.worker(ep, "echo.py")
    for job in p.accepted:
        wait_until(
            lambda job=job: p.send("GET", f"/v2/{ep}/status/{job}")[1]["status"] == "COMPLETED",
            timeout=30,
            what=f"accepted job {job} to complete",
        )


def test_malformed_bodies(probe: Probe) -> None:
    run = f"/v2/{probe.ep}/run"
    probe.error(400, "POST", run, "json", raw=b'{"input": {"a": 1}')
    probe.error(400, "POST", run, "json", raw=b"")
    probe.error(400, "POST", run, "input", body={"webhook": "http://x/hook"})
    probe.error(400, "POST", run, "object", raw=b"[1, 2, 3]")
    probe.error(400, "POST", run, "object", raw=b'"just a string"')
    probe.error(400, "POST", run, raw=b"null")
    probe.error(400, "POST", run, raw=b'{"input": "\xff\xfe"}')
    probe.error(400, "POST", run, "webhook", body={"input": {}, "webhook": 123})
    probe.error(400, "POST", run, "executionTimeout", body={"input": {}, "policy": {"executionTimeout": 10}})
    probe.error(400, "POST", run, "ttl", body={"input": {}, "policy": {"ttl": "soon"}})
    probe.error(400, "POST", f"/v2/{probe.ep}/runsync?wait=1000", "input", body={"inputs": {}})
    assert probe.send("POST", run, {"input": None, "extra": "ignored"})[0] == 200  # any JSON input


def test_payload_limits(probe: Probe) -> None:
    big = json.dumps({"input": "x" * (10 * MB)}).encode()
    probe.error(413, "POST", f"/v2/{probe.ep}/run", "10", raw=big)
    huge = json.dumps({"input": "x" * (20 * MB)}).encode()
    probe.error(413, "POST", f"/v2/{probe.ep}/runsync", "20", raw=huge)
    code, out = probe.send("POST", f"/v2/{probe.ep}/runsync?wait=1000", raw=big)  # under runsync's limit
    assert code == 200 and out["status"] in ("IN_QUEUE", "IN_PROGRESS"), out
    probe.accepted.append(out["id"])


def test_unknown_things(probe: Probe) -> None:
    ep = probe.ep
    probe.error(404, "POST", "/v2/no-such-endpoint/run", "no-such-endpoint", body={"input": {}})
    probe.error(404, "GET", "/v2/no-such-endpoint/health", "endpoint")
    for route in ("status", "status-sync", "stream", "cancel", "retry"):
        method = "POST" if route in ("cancel", "retry") else "GET"
        probe.error(404, method, f"/v2/{ep}/{route}/no-such-job", "no-such-job")
    probe.error(404, "GET", f"/v2/{ep}/nonsense", "route")
    probe.error(404, "GET", "/nowhere", "route")
    probe.error(405, "GET", f"/v2/{ep}/run", "GET")
    probe.error(405, "DELETE", f"/v2/{ep}/status/x", "DELETE")


def test_bad_query_parameters(probe: Probe) -> None:
    ep = probe.ep
    probe.error(400, "POST", f"/v2/{ep}/runsync?wait=abc", "wait", body={"input": {}})
    probe.error(400, "POST", f"/v2/{ep}/runsync?wait=10", "wait", body={"input": {}})
    probe.error(400, "POST", f"/v2/{ep}/runsync?wait=999999999", "wait", body={"input": {}})
    job = probe.send("POST", f"/v2/{ep}/run", {"input": {}})[1]["id"]
    probe.error(400, "GET", f"/v2/{ep}/status-sync/{job}?wait=-1", "wait")
    probe.error(400, "GET", f"/v2/{ep}/stream/{job}?wait=x", "wait")


def test_keys(probe: Probe) -> None:
    c, ep = probe.c, probe.ep
    run = f"/v2/{ep}/run"
    body = {"input": {}}
    probe.error(401, "POST", run, "key", body=body, key="")
    probe.error(401, "POST", run, "key", body=body, key="tk_wrong")
    created = c.admin.create_key("short-lived")
    assert probe.send("POST", run, body, key=created["key"])[0] == 200
    c.admin.revoke_key(created["id"])
    probe.error(401, "POST", run, "revoked", body=body, key=created["key"])
    other = c.endpoint("other")
    scoped = c.admin.create_key("scoped", endpointIds=[other])
    probe.error(403, "POST", run, ep, body=body, key=scoped["key"])
    assert probe.send("POST", f"/v2/{other}/purge-queue", key=scoped["key"])[0] == 200
    probe.error(403, "GET", "/admin/v1/endpoints", "admin", key=scoped["key"])
    probe.error(401, "GET", "/admin/v1/endpoints", key="tk_wrong")


def test_worker_tokens(probe: Probe) -> None:
    c, ep = probe.c, probe.ep
    token = c.admin.worker_token(ep, "w-a")
    other = c.endpoint("other")
    take = "job-take/{w}?gpu=x&job_in_progress=0"
    probe.error(401, "GET", f"/v2/{other}/{take.format(w='w-a')}", "w-a", auth=token)
    probe.error(401, "GET", f"/v2/{ep}/{take.format(w='w-b')}", "w-b", auth=token)
    probe.error(401, "GET", f"/v2/{ep}/ping/w-b?gpu=x", auth=token)
    probe.error(401, "GET", f"/v2/{ep}/{take.format(w='w-a')}", auth=c.key)  # a client key is not a token
    probe.error(401, "POST", f"/v2/{ep}/run", body={"input": {}}, auth=token)  # nor the reverse
    probe.error(401, "GET", f"/v2/{ep}/{take.format(w='w-a')}", "key", auth="")
    probe.error(400, "GET", f"/v2/{ep}/job-take-batch/w-a?batch_size=abc", "batch_size", auth=token)
    probe.error(
        404, "POST", f"/v2/{ep}/job-done/w-a/no-such-job?isStream=false", "no-such-job", auth=token, raw=b"{}"
    )


def test_worker_sends_garbage_result(probe: Probe) -> None:
    c, ep = probe.c, probe.ep
    token = c.admin.worker_token(ep, "w-garbage")
    probe.send("POST", f"/v2/{ep}/purge-queue")  # only our job below is queued
    probe.accepted.clear()
    job = probe.send("POST", f"/v2/{ep}/run", {"input": {"g": 1}})[1]["id"]
    probe.accepted.clear()  # it ends FAILED, not COMPLETED
    code, taken = probe.send("GET", f"/v2/{ep}/job-take/w-garbage?gpu=x", auth=token)
    assert code == 200 and taken["id"] == job
    done = f"/v2/{ep}/job-done/w-garbage/{job}?isStream=false"
    probe.error(400, "POST", f"/v2/{ep}/job-stream/w-garbage/{job}", "json", auth=token, raw=b'{"a": "\xff"}')
    probe.error(400, "POST", done, "json", auth=token, raw=b"<html>oops</html>")
    final = probe.send("GET", f"/v2/{ep}/status/{job}")[1]
    assert final["status"] == "FAILED" and "not JSON" in final["error"]
    code, _ = probe.send("POST", f"/v2/{ep}/retry/{job}")
    assert code == 200
    probe.accepted.append(job)


def test_admin_mistakes(probe: Probe) -> None:
    adm = probe.c.coordinator.admin_key
    eps = "/admin/v1/endpoints"
    probe.error(400, "POST", eps, "imagee", body={"name": "x1", "image": "i", "imagee": 1}, key=adm)
    probe.error(400, "POST", eps, "name", body={"image": "i"}, key=adm)
    spec = {"name": "x2", "image": "i", "workersMin": 5, "workersMax": 1}
    probe.error(400, "POST", eps, "workersMin", body=spec, key=adm)
    probe.error(409, "POST", eps, "exists", body={"name": probe.ep, "image": "i"}, key=adm)
    probe.error(400, "POST", eps, "json", raw=b"{", key=adm)
    probe.error(404, "GET", f"{eps}/nope", "nope", key=adm)
    probe.error(404, "DELETE", "/admin/v1/keys/nope", "nope", key=adm)
    probe.error(400, "POST", "/admin/v1/keys", "name", body={}, key=adm)
    probe.error(404, "POST", f"{eps}/nope/workers/w/token", "nope", key=adm)
