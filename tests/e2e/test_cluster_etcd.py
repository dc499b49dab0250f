"""A production-shaped cluster end to end: a real etcd, a ``tide-coordinator`` process on it and two
``tide-noded`` processes (own config, state dir and simulated GPUs each: node-a and node-b), with
unmodified RunPod handlers as workers and the ``runpod`` SDK as client.

What an operator relies on: scale from zero; restarting noded adopts the workers it left running
(same ids, same processes, no duplicates); a host that dies with its workers has them replaced on
another host and its in-flight job requeued and completed; draining a host moves its workers off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import NodedProcess
from tests.fixtures.coordinator import REPO_ROOT, Admin, CoordinatorProcess, http_json, wait_until
from tests.fixtures.etcd import ETCD_MISSING, EtcdServer, etcd_binary

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(90)]

ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"
LOST_AFTER_S = 4.0


class EtcdCluster:
    def __init__(self, etcd: EtcdServer, coordinator: CoordinatorProcess) -> None:
        self.etcd = etcd
        self.coordinator = coordinator
        self.admin: Admin = coordinator.admin
        self.nodes: dict[str, NodedProcess] = {}
        self.key = ""

    @property
    def url(self) -> str:
        return self.coordinator.url

    def add_node(self, hostname: str, gpus: str = "2xH100-80GB") -> NodedProcess:
        node = NodedProcess(
            coordinator_url=self.url, join_key=self.coordinator.admin_key, hostname=hostname, gpus=gpus
        )
        self.nodes[hostname] = node
        return node.start(admin=self.admin)

    def endpoint(self, **spec: Any) -> str:
        name = f"ep-{uuid.uuid4().hex[:8]}"
        body = {"name": name, "image": ECHO, "scalerType": "REQUEST_COUNT", "scalerValue": 1, **spec}
        self.admin.call("POST", "/admin/v1/endpoints", body)
        return name

    def sdk(self, ep: str) -> Any:
        import runpod

        runpod.endpoint_url_base = self.url + "/v2"
        return runpod.Endpoint(ep, api_key=self.key)

    def status(self, ep: str, job_id: str) -> dict[str, Any]:
        code, body = http_json("GET", f"{self.url}/v2/{ep}/status/{job_id}", key=self.key)
        assert code == 200, body
        return dict(body)

    def wait_status(self, ep: str, job_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status(ep, job_id)
            return st if st["status"] in states else None

        return dict(wait_until(check, timeout=timeout, what=f"job {job_id} in {states}"))

    def workers(self, ep: str) -> list[dict[str, Any]]:
        return list(self.admin.call("GET", f"/admin/v1/workers?endpoint={ep}"))

    def node(self, node_id: str) -> dict[str, Any]:
        return next(n for n in self.admin.call("GET", "/admin/v1/nodes") if n["id"] == node_id)

    def logs(self) -> str:
        parts = [f"--- coordinator ---\n{self.coordinator.log_tail(6000)}"]
        parts += [f"--- {h} ---\n{n.log_tail(4000)}" for h, n in self.nodes.items()]
        return "\n".join(parts)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    etcd = EtcdServer()
    coordinator = CoordinatorProcess(store_url=f"etcd://127.0.0.1:{etcd.client_port}", claim_grace_s=3.0)
    # A host silent for LOST_AFTER_S is lost (the default 15 s would make these tests slow).
    with coordinator.config_path.open("a") as f:
        f.write(f"\n[nodes]\nlost-after-s = {LOST_AFTER_S}\n")
    c = EtcdCluster(etcd, coordinator)
    try:
        etcd.start()
        coordinator.start()
        c.key = str(c.admin.create_key(f"client-{uuid.uuid4().hex[:6]}")["key"])
        c.add_node("node-a")
        c.add_node("node-b")
        yield c
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(c.logs())
    finally:
        for node in c.nodes.values():
            node.cleanup()  # noded first, then every worker process group it left
        coordinator.cleanup()
        etcd.stop()


def test_scale_from_zero_and_a_noded_restart_adopts_its_workers(cluster: EtcdCluster) -> None:
    ep = cluster.endpoint(workersMin=0, workersMax=2, idleTimeout=60)
    assert cluster.workers(ep) == []
    sdk = cluster.sdk(ep)
    assert sdk.run_sync({"first": 1}, timeout=60) == {"echo": {"first": 1}}

    [worker] = cluster.workers(ep)
    node = cluster.nodes[worker["nodeId"]]
    before = {w.id: w.pid for w in node.workers() if w.alive()}
    assert list(before) == [worker["workerId"]]

    assert node.stop() == 0  # SIGTERM: the agent goes, its workers stay
    assert all(w.alive() for w in node.workers())
    node.start(admin=cluster.admin)

    assert "adopt 1" in wait_until(
        lambda: "adopt 1" in node.log_tail(20_000) and node.log_tail(20_000), timeout=20, what="adoption"
    )
    after = {w.id: w.pid for w in node.workers() if w.alive()}
    assert after == before  # same worker ids, same processes, nothing started twice
    assert [w["workerId"] for w in cluster.workers(ep)] == [worker["workerId"]]
    job = sdk.run({"second": 2})
    done = cluster.wait_status(ep, job.job_id, "COMPLETED")
    assert done["workerId"] == worker["workerId"] and done["output"] == {"echo": {"second": 2}}
    assert {w.id: w.pid for w in node.workers() if w.alive()} == before
    other = next(n for h, n in cluster.nodes.items() if h != worker["nodeId"])
    assert other.workers() == []


def test_a_lost_host_has_its_workers_replaced_and_its_job_requeued(cluster: EtcdCluster) -> None:
    ep = cluster.endpoint(workersMin=0, workersMax=1, idleTimeout=60)
    job = cluster.sdk(ep).run({"sleep": 3, "tag": "survivor"})
    running = cluster.wait_status(ep, job.job_id, "IN_PROGRESS", timeout=45)
    [first] = cluster.workers(ep)
    assert first["workerId"] == running["workerId"]
    lost = cluster.nodes[first["nodeId"]]

    lost.kill()  # SIGKILL noded ...
    assert lost.kill_workers() == [first["workerId"]]  # ... and its workers: no heartbeats, no pings

    done = cluster.wait_status(ep, job.job_id, "COMPLETED", "FAILED", timeout=45)
    assert done["status"] == "COMPLETED" and done["output"] == {"echo": {"sleep": 3, "tag": "survivor"}}
    assert done["workerId"] != first["workerId"]
    [replacement] = cluster.workers(ep)
    assert replacement["workerId"] == done["workerId"]
    assert replacement["nodeId"] != lost.hostname
    assert cluster.node(lost.hostname)["lost"] is True
    jobs = cluster.admin.call("GET", f"/admin/v1/endpoints/{ep}/jobs")["jobs"]
    assert next(j for j in jobs if j["id"] == job.job_id)["retries"] >= 1


def test_drain_moves_workers_off_a_node(cluster: EtcdCluster) -> None:
    ep = cluster.endpoint(workersMin=2, workersMax=2, idleTimeout=60)
    placed = wait_until(lambda: len(ws := cluster.workers(ep)) == 2 and ws, timeout=30, what="2 workers")
    drained = placed[0]["nodeId"]
    keep = next(h for h in cluster.nodes if h != drained)

    cluster.admin.call("POST", f"/admin/v1/nodes/{drained}/drain")

    def moved() -> list[dict[str, Any]] | None:
        ws = cluster.workers(ep)
        on_keep = len(ws) == 2 and all(w["nodeId"] == keep for w in ws)
        return ws if on_keep and not [w for w in cluster.nodes[drained].workers() if w.alive()] else None

    after = wait_until(moved, timeout=45, what=f"the workers to leave {drained}")
    assert not {w["workerId"] for w in after} & {w["workerId"] for w in placed if w["nodeId"] == drained}
    assert cluster.node(drained)["draining"] is True
    out = cluster.sdk(ep).run_sync({"after": "drain"}, timeout=60)
    assert out == {"echo": {"after": "drain"}}


def test_a_coordinator_outage_longer_than_lost_after_loses_no_host(cluster: EtcdCluster) -> None:
    ep = cluster.endpoint(workersMin=1, workersMax=1, idleTimeout=60)
    [worker] = wait_until(lambda: cluster.workers(ep), timeout=30, what="the min worker")
    node = cluster.nodes[worker["nodeId"]]
    pids = wait_until(lambda: {w.id: w.pid for w in node.workers() if w.alive()}, what="its process")

    cluster.coordinator.stop()
    time.sleep(LOST_AFTER_S + 1)  # every heartbeat in the store is now older than lost-after
    cluster.coordinator.start()
    since = time.time()
    wait_until(  # the hosts have reached the new leader, and a full lost-after has passed
        lambda: (
            time.time() - since > LOST_AFTER_S + 1
            and all(cluster.node(h)["lastHeartbeat"] > since for h in cluster.nodes)
        ),
        timeout=30,
        what="heartbeats after the restart",
    )
    assert not any(cluster.node(h)["lost"] for h in cluster.nodes)
    assert [w["workerId"] for w in cluster.workers(ep)] == [worker["workerId"]]
    assert {w.id: w.pid for w in node.workers() if w.alive()} == pids  # nothing was replaced
    assert cluster.sdk(ep).run_sync({"after": "outage"}, timeout=60) == {"echo": {"after": "outage"}}
