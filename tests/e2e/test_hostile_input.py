"""Hostile input, end to end against a real coordinator on etcd (issue 12): each
test replays an attack over real HTTP and checks the answer is a JSON 4xx that
names what to fix, and that no job is wedged by it.

- webhooks to loopback, link-local, private and metadata addresses, or not http(s);
- fields that would push a job record past etcd's request limit (client and worker side);
- deeply nested JSON and bad host names at node registration;
- HTTP-level abuse: long URLs, huge or many headers, slow headers and bodies.

The coordinator here allows webhooks to 127.0.0.1 only (as the other e2e
modules' do); the receiver of the SSRF test listens on 127.0.0.2, which is
loopback too but not allowed.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, WebhookReceiver, _etcd
from tests.fixtures.coordinator import CoordinatorProcess, http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(90)]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def hostile() -> Iterator[Cluster]:
    etcd = _etcd()
    coordinator = CoordinatorProcess(
        store_url=f"etcd://127.0.0.1:{etcd.client_port}",
        claim_grace_s=3.0,
        server_config="header-timeout-s = 1.0\nbody-timeout-s = 1.0",
    )
    c: Cluster | None = None
    try:
        coordinator.start()
        c = Cluster(coordinator, etcd)
        yield c
    finally:
        if c is not None:
            c.close_workers()
        coordinator.cleanup()
        etcd.stop()


def call(c: Cluster, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    kw.setdefault("key", c.key)
    code, out = http_json(method, c.url + path, body, **kw)
    assert code < 500, (method, path, code, out)
    return code, out


def refused(c: Cluster, code: int, method: str, path: str, body: Any = None, *words: str, **kw: Any) -> str:
    got, out = call(c, method, path, body, **kw)
    assert got == code, (path, got, out)
    assert isinstance(out, dict) and isinstance(out.get("error"), str), out
    for word in words:
        assert word.lower() in out["error"].lower(), (word, out["error"])
    assert "etcdserver" not in out["error"], out  # the store's own text never reaches a client
    return str(out["error"])


# -- webhooks -------------------------------------------------------------------


@pytest.fixture
def inner_receiver() -> Iterator[WebhookReceiver]:
    """A "private service" on 127.0.0.2: loopback, not in the coordinator's allowlist."""
    receiver = WebhookReceiver(host="127.0.0.2")
    yield receiver.start()
    receiver.stop()


def test_webhooks_to_internal_addresses_are_refused(
    hostile: Cluster, inner_receiver: WebhookReceiver
) -> None:
    ep = hostile.endpoint("hook")
    run = f"/v2/{ep}/run"
    for url in (
        f"{inner_receiver.url}/hook/internal?x=1",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/",
        "http://100.64.0.1/",
        "http://0.0.0.0:8420/",
        "http://[::1]:8420/",
        "http://2130706434/",  # 127.0.0.2 as a number
        "http://localhost:8420/",
        "http://224.0.0.1/",
    ):
        refused(hostile, 400, "POST", run, {"input": {}, "webhook": url}, "webhook")
    for url in ("file:///etc/passwd", "gopher://x/", "ftp://example.com/", "http:///nohost", "not a url"):
        refused(hostile, 400, "POST", run, {"input": {}, "webhook": url}, "webhook")
    # the allowlisted receiver still works
    ok = WebhookReceiver().start()
    try:
        code, job = call(hostile, "POST", run, {"input": {"v": 1}, "webhook": f"{ok.url}/hook/ok"})
        assert code == 200, job
        hostile.worker(ep, "echo.py")
        wait_until(lambda: ok.bodies(), timeout=30, what="the allowed webhook")
    finally:
        ok.stop()
    assert inner_receiver.bodies() == []


# -- stored field bounds --------------------------------------------------------


def test_oversized_client_fields_are_a_400_naming_the_field(hostile: Cluster) -> None:
    ep = hostile.endpoint("big")
    run = f"/v2/{ep}/run"
    refused(
        hostile,
        400,
        "POST",
        run,
        {"input": {}, "webhook": "https://example.com/" + "a" * MB},
        "webhook",
        "2048",
    )
    secret = {"accessId": "a", "accessSecret": "s" * (2 * MB), "bucketName": "b"}
    refused(hostile, 400, "POST", run, {"input": {}, "s3Config": secret}, "accessSecret", "1024")
    refused(hostile, 400, "POST", run, {"input": {}, "s3Config": {"objectPath": "p" * 5000}}, "objectPath")
    code, out = call(hostile, "POST", run, {"input": {}, "webhook": "https://example.com/" + "a" * 2000})
    assert code == 200, out  # a long URL under the limit is fine


def test_a_worker_cannot_wedge_a_job_with_huge_results(hostile: Cluster) -> None:
    c = hostile
    ep = c.endpoint("wedge")
    token = c.admin.worker_token(ep, "w-huge")
    auth = {"Authorization": token}
    jobs = [call(c, "POST", f"/v2/{ep}/run", {"input": {"n": i}})[1]["id"] for i in range(3)]
    take = f"/v2/{ep}/job-take/w-huge?gpu=x"

    def done(job: str, body: Any) -> tuple[int, Any]:
        path = f"/v2/{ep}/job-done/w-huge/{job}?isStream=false"
        return call(c, "POST", path, raw=json.dumps(body).encode(), key=None, headers=auth)

    for _ in jobs:
        assert call(c, "GET", take, key=None, headers=auth)[0] == 200
    # a 2 MB error: stored cut, the job FAILED
    assert done(jobs[0], {"error": "e" * (2 * MB)}) == (200, {"accepted": True})
    # a 2 MB progress update, then a 2 MB output: both go to blob storage
    assert done(jobs[1], {"status": "IN_PROGRESS", "output": "p" * (2 * MB)}) == (200, {"accepted": True})
    assert done(jobs[1], {"output": "o" * (2 * MB)}) == (200, {"accepted": True})
    # a 2 MB stream chunk is refused with the limit; the job goes on
    path = f"/v2/{ep}/job-stream/w-huge/{jobs[2]}"
    raw = json.dumps({"output": "s" * (2 * MB)}).encode()
    refused(c, 413, "POST", path, None, "chunk", "limit", raw=raw, key=None, headers=auth)
    assert done(jobs[2], {"output": "fine"}) == (200, {"accepted": True})
    failed = call(c, "GET", f"/v2/{ep}/status/{jobs[0]}")[1]
    assert failed["status"] == "FAILED" and "limit" in failed["error"] and len(failed["error"]) < 70_000
    completed = call(c, "GET", f"/v2/{ep}/status/{jobs[1]}")[1]
    assert completed["status"] == "COMPLETED" and completed["output"] == "o" * (2 * MB)
    assert call(c, "GET", f"/v2/{ep}/status/{jobs[2]}")[1]["status"] == "COMPLETED"


# -- nesting and names ------------------------------------------------------------


def test_deeply_nested_json_is_a_400(hostile: Cluster) -> None:
    c = hostile
    ep = c.endpoint("deep")
    deep = b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused(c, 400, "POST", f"/v2/{ep}/run", None, "nest", raw=deep)
    middling = b'{"input": ' + b"[" * 500 + b"]" * 500 + b"}"  # decodes, but deeper than we store
    refused(c, 400, "POST", f"/v2/{ep}/run", None, "nest", raw=middling)
    adm = c.coordinator.admin_key
    refused(c, 400, "POST", "/admin/v1/endpoints", None, raw=b'{"name": ' + b"[" * 100_000, key=adm)
    refused(c, 400, "POST", "/node/v1/register", None, raw=b'{"inventory": ' + b"{" * 100_000, key=adm)
    # a worker's deeply nested result fails its job with the reason instead of a 500
    token = c.admin.worker_token(ep, "w-deep")
    job = call(c, "POST", f"/v2/{ep}/run", {"input": {}})[1]["id"]
    assert (
        call(c, "GET", f"/v2/{ep}/job-take/w-deep?gpu=x", key=None, headers={"Authorization": token})[0]
        == 200
    )
    path = f"/v2/{ep}/job-done/w-deep/{job}?isStream=false"
    refused(
        c, 400, "POST", path, None, "nest", raw=b"[" * 100_000, key=None, headers={"Authorization": token}
    )
    final = call(c, "GET", f"/v2/{ep}/status/{job}")[1]
    assert final["status"] == "FAILED" and "nest" in final["error"]


def test_bad_host_names_at_registration_are_a_400(hostile: Cluster) -> None:
    adm = hostile.coordinator.admin_key
    for name in ("", "a/b", "a b", "-x", "x" * 64, "a..b", "ok\n", "../../etc"):
        refused(
            hostile, 400, "POST", "/node/v1/register", {"inventory": {"hostname": name}}, "hostname", key=adm
        )
    code, out = call(hostile, "POST", "/node/v1/register", {"inventory": {"hostname": "gpu-01.dc1"}}, key=adm)
    assert code == 200 and out["nodeId"] == "gpu-01.dc1", out


# -- HTTP level ---------------------------------------------------------------------


def raw_http(c: Cluster, data: bytes, *, timeout: float = 20.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; parse one response (status, headers, body)."""
    host, port = c.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def json_400(c: Cluster, request: bytes) -> str:
    status, headers, body = raw_http(c, request)
    assert status == 400 and headers.get("content-type", "").startswith("application/json"), (
        status,
        headers,
        body,
    )
    return str(json.loads(body)["error"])


def test_http_level_errors_are_json(hostile: Cluster) -> None:
    c = hostile
    long_url = b"GET /v2/x/status/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert "8190" in json_400(c, long_url)
    big_header = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\nConnection: close\r\n\r\n"
    )
    json_400(c, big_header)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    json_400(c, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"Connection: close\r\n\r\n")
    json_400(c, b"NOT HTTP AT ALL\r\n\r\n")


def test_slow_headers_and_bodies_are_cut_off(hostile: Cluster) -> None:
    """Slowloris: a connection that dribbles its headers or its body is closed by the server
    (header-timeout-s and body-timeout-s are 1 s here); no timing is asserted, only that the
    server ends them itself."""
    host, port = hostile.url.removeprefix("http://").split(":")
    conns = []
    for _ in range(20):
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        conns.append(s)
    for s in conns:
        while s.recv(65536):  # whatever the server answers, it then closes (a hang fails the test)
            pass
        s.close()
    ep = hostile.endpoint("slow")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST /v2/{ep}/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {hostile.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        s.sendall(head.encode() + b'{"input": "')
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    status = int(buf.split(b" ", 2)[1])
    assert status == 408 and b"application/json" in buf, buf[:500]
