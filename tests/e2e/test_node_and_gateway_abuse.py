"""What a compromised GPU host, or a local process beside the workers, can do, over HTTP against
a real etcd, a coordinator process and a worker gateway process (issue 12's review):

- a node's heartbeat speaks for the workers placed on that node only: another host calling them
  "unhealthy" stops nothing and shows nothing;
- a node's address is an http(s) origin (the coordinator fetches worker logs from it with the
  node's token), its redirects are not followed, and an answer that is not JSON is a 503 that
  says so, not a 500;
- the worker gateway on a host's loopback carries the worker API only, path as sent: no admin
  route through it, no dot-segments or encoded characters that turn one route into another.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.coordinator import REPO_ROOT, CoordinatorProcess, http_json, wait_until
from tests.fixtures.etcd import ETCD_MISSING, EtcdServer, etcd_binary, free_port, stop_process

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(120)]


def _gpus(node: str, n: int) -> list[dict[str, Any]]:
    gpu = {"type_id": "H100-80GB", "memory_mb": 81559}
    return [{"index": i, "uuid": f"GPU-{node}-{i}", **gpu} for i in range(n)]


@dataclass
class Cluster:
    proc: CoordinatorProcess
    gateway: str  # the worker gateway's base URL
    join: str  # a node join key

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        return http_json(method, self.proc.url + path, body, key=key or self.proc.admin_key)

    def register(self, host: str, gpus: int = 0, address: str = "") -> tuple[int, Any]:
        body = {"inventory": {"hostname": host, "gpus": _gpus(host, gpus)}, "address": address}
        return self.call("POST", "/node/v1/register", body, key=self.join)

    def beat(self, host: str, token: str, gpus: int, workers: list[dict[str, Any]]) -> int:
        body = {"inventory": {"hostname": host, "gpus": _gpus(host, gpus)}, "workers": workers}
        return self.call("POST", f"/node/v1/nodes/{host}/heartbeat", body, key=token)[0]


@pytest.fixture(scope="module")
def abuse() -> Iterator[Cluster]:
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    etcd = EtcdServer()
    proc: CoordinatorProcess | None = None
    gateway: subprocess.Popen[bytes] | None = None
    try:
        etcd.start()
        proc = CoordinatorProcess(store_url="etcd://" + etcd.url.split("//", 1)[1], take_wait_s=0.2)
        proc.start()
        listen = f"127.0.0.1:{free_port()}"
        argv = [sys.executable, "-m", "noded.gateway", "--listen", listen, "--upstream", proc.url]
        with open(proc.root / "gateway.log", "ab") as log:
            gateway = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://{listen}"
        wait_until(lambda: _answers(url + "/_gateway/healthz"), what="the worker gateway")
        join = proc.admin.create_key("review-join", scope="node")["key"]
        yield Cluster(proc, url, join)
    finally:
        stop_process(gateway)
        if proc is not None:
            proc.cleanup()
        etcd.stop()


def _answers(url: str) -> bool:
    try:
        return http_json("GET", url, timeout=1.0)[0] == 200
    except OSError:
        return False


def _assigned(c: Cluster, ep: str) -> list[dict[str, Any]]:
    code, workers = c.call("GET", f"/admin/v1/workers?endpoint={ep}")
    assert code == 200, workers
    return list(workers)


def test_a_node_cannot_report_another_nodes_workers_broken(abuse: Cluster) -> None:
    c = abuse
    code, a = c.register("rv-host-a", gpus=2)
    assert code == 200, a
    code, b = c.register("rv-host-b")  # the compromised host: no GPU of its own needed
    assert code == 200, b
    c.call("POST", "/admin/v1/endpoints", {"name": "rv-victim", "image": "dir:///x", "workersMin": 1})
    victim = wait_until(lambda: _assigned(c, "rv-victim"), what="the victim's worker")[0]
    assert victim["nodeId"] == "rv-host-a"
    lie = {"worker_id": victim["workerId"], "endpoint_id": "rv-victim", "state": "unhealthy", "restarts": 99}
    assert c.beat("rv-host-b", b["token"], 0, [lie]) == 200
    # A scheduler tick after the lie: it places a new endpoint's worker.
    c.call("POST", "/admin/v1/endpoints", {"name": "rv-probe", "image": "dir:///x", "workersMin": 1})
    wait_until(lambda: _assigned(c, "rv-probe"), what="a scheduler tick")
    after = _assigned(c, "rv-victim")
    assert [w["workerId"] for w in after] == [victim["workerId"]], after
    assert after[0]["state"] != "unhealthy" and after[0]["restarts"] == 0, after


class _TextServer:
    """A plain HTTP server that records the request lines and answers with a redirect to
    ``/followed``, which answers text."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                line = conn.recv(65536).split(b"\r\n", 1)[0]
                self.lines.append(line)
                if line.startswith(b"GET /followed "):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                else:
                    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /followed\r\nContent-Length: 0\r\n\r\n")


def test_a_node_address_is_an_origin_and_its_text_answer_no_500(abuse: Cluster) -> None:
    c = abuse
    server = _TextServer()
    try:
        origin = f"http://127.0.0.1:{server.port}"
        for bad in (f"{origin}/other?x=", f"http://user@127.0.0.1:{server.port}", "file:///etc/passwd"):
            code, out = c.register("rv-host-addr", address=bad)
            assert code == 400 and "address" in out["error"], (bad, out)
        code, reg = c.register("rv-host-addr", address=origin)
        assert code == 200, reg
        report = {"worker_id": "rv-ghost", "endpoint_id": "x", "state": "running"}
        code, bad_beat = c.call(
            "POST",
            "/node/v1/nodes/rv-host-addr/heartbeat",
            {"inventory": {"hostname": "rv-host-addr"}, "workers": [report], "address": origin + "/x?"},
            key=reg["token"],
        )
        assert code == 400 and "address" in bad_beat["error"], bad_beat
        assert c.beat("rv-host-addr", reg["token"], 0, [report]) == 200
        code, out = c.call("GET", "/admin/v1/workers/rv-ghost/logs")
        assert code == 503 and "other than JSON" in out["error"], (code, out)
        assert server.lines == [b"GET /v1/workers/rv-ghost/logs?tail=100 HTTP/1.1"]  # not followed
    finally:
        server.sock.close()


def _via_gateway(c: Cluster, method: str, path: str, key: str) -> tuple[int, Any]:
    return http_json(method, c.gateway + path, key=key)


def test_the_gateway_carries_the_worker_api_only(abuse: Cluster) -> None:
    c = abuse
    code, out = _via_gateway(c, "GET", "/admin/v1/keys", c.proc.admin_key)
    assert code == 404 and "worker API" in out["error"], out
    for path in (
        "/v2/ep/ping/w/..%2F..%2F..%2F..%2Fadmin%2Fv1%2Fkeys",  # decoded and normalized: /admin/v1/keys
        "/v2/ep/ping/../../admin/v1/keys",
        "/v2/ep/job-take/w/x",
        "/node/v1/register",
    ):
        code, out = _via_gateway(c, "GET", path, c.proc.admin_key)
        assert code == 404 and isinstance(out, dict) and "worker API" in out["error"], (path, out)


def test_the_gateway_forwards_the_path_as_sent(abuse: Cluster) -> None:
    c = abuse
    c.call("POST", "/admin/v1/endpoints", {"name": "rv-gw", "image": "dir:///x"})
    token = c.call("POST", "/admin/v1/endpoints/rv-gw/workers/rv-w/token")[1]["token"]
    code, _ = _via_gateway(c, "GET", "/v2/rv-gw/job-take/rv-w?gpu=x", token)
    assert code == 204  # the worker API still goes through
    # %3F is part of the worker id, not the start of a query the gateway made up.
    code, out = _via_gateway(c, "GET", "/v2/rv-gw/ping/rv-w%3Fjob_id=x", token)
    assert code == 401 and "'rv-w?job_id=x'" in out["error"], out
