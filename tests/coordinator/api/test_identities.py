"""Who a caller is, over HTTP against one running coordinator (issue 12, moderate 4-6):

- node identity: a join key registers a *new* host once; the host's own node token (or an
  admin key) registers it again; ``DELETE /admin/v1/nodes/<host>`` (``tide node forget``)
  kills its token and lets the join key register it anew; noded keeps its token across a
  restart;
- a worker completes only jobs it holds;
- worker tokens die with their endpoint (its generation, not its name) and their assignment.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from noded import CoordinatorClient
from tests.fixtures.coordinator import CoordinatorProcess, http_json, wait_until
from tide.api.errors import Unauthenticated
from tide.api.nodes import Heartbeat, NodeInventory

pytestmark = pytest.mark.timeout(120)

# Four cards: the other tests' endpoints may get workers placed here too.
GPUS = [{"index": i, "uuid": f"GPU-id-{i}", "type_id": "H100-80GB", "memory_mb": 81559} for i in range(4)]


@pytest.fixture(scope="module")
def proc() -> Iterator[CoordinatorProcess]:
    p = CoordinatorProcess(store_url="memory://", take_wait_s=0.2)
    try:
        p.start()
        yield p
    finally:
        p.cleanup()


def _register(p: CoordinatorProcess, key: str, host: str, gpus: list[Any] | None = None) -> tuple[int, Any]:
    body = {"inventory": {"hostname": host, "gpus": gpus or []}}
    return http_json("POST", p.url + "/node/v1/register", body, key=key)


def _beat(p: CoordinatorProcess, host: str, token: str) -> int:
    body = {"inventory": {"hostname": host}, "workers": []}
    return http_json("POST", f"{p.url}/node/v1/nodes/{host}/heartbeat", body, key=token)[0]


def test_a_join_key_registers_a_new_host_once(proc: CoordinatorProcess) -> None:
    join = proc.admin.create_key("join-a", scope="node")["key"]
    code, first = _register(proc, join, "id-a")
    assert code == 200, first
    code, again = _register(proc, join, "id-a")  # the impersonation of issue 12
    assert code == 403 and "tide node forget id-a" in again["error"], again
    code, other = _register(proc, first["token"], "id-b")  # a's token is not b's
    assert code == 401, other
    code, same = _register(proc, first["token"], "id-a")  # a restarted noded
    assert code == 200 and same["token"] == first["token"], same
    assert _beat(proc, "id-a", first["token"]) == 200


def test_admin_re_registration_and_forget_end_the_old_token(proc: CoordinatorProcess) -> None:
    join = proc.admin.create_key("join-c", scope="node")["key"]
    old = _register(proc, join, "id-c")[1]["token"]
    code, new = _register(proc, proc.admin_key, "id-c")  # an admin re-images the host in place
    assert code == 200 and new["token"] != old
    assert _beat(proc, "id-c", old) == 401
    assert _beat(proc, "id-c", new["token"]) == 200
    code, out = http_json("DELETE", f"{proc.url}/admin/v1/nodes/id-c", key=proc.admin_key)
    assert code == 200 and out == {"id": "id-c", "forgotten": True}, out
    assert _beat(proc, "id-c", new["token"]) == 401
    assert _register(proc, new["token"], "id-c")[0] == 401
    code, joined = _register(proc, join, "id-c")  # the re-imaged host joins as new
    assert code == 200 and joined["token"] not in (old, new["token"])


def test_noded_keeps_its_token_across_a_restart(proc: CoordinatorProcess, tmp_path: Path) -> None:
    join = proc.admin.create_key("join-d", scope="node")["key"]
    token_file = tmp_path / "state" / "node-token"
    inventory = NodeInventory(hostname="id-d")

    async def life() -> str:
        client = CoordinatorClient(proc.url, join, token_file=str(token_file))
        try:
            await client.register(inventory, "")
            await client.heartbeat(Heartbeat(inventory=inventory), "")
            return client.token
        finally:
            await client.close()

    first = asyncio.run(life())
    assert token_file.read_text().strip() == first
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert asyncio.run(life()) == first  # restarted: its token, not the join key, registered it

    async def without_state() -> None:
        client = CoordinatorClient(proc.url, join)  # what noded did before: the join key again
        try:
            await client.register(inventory, "")
        finally:
            await client.close()

    with pytest.raises(Unauthenticated, match="already registered"):
        asyncio.run(without_state())
    http_json("DELETE", f"{proc.url}/admin/v1/nodes/id-d", key=proc.admin_key)
    assert asyncio.run(life()) != first  # forgotten: the stale token is refused, the join key joins


def _take(p: CoordinatorProcess, ep: str, worker: str, token: str) -> tuple[int, Any]:
    return http_json("GET", f"{p.url}/v2/{ep}/job-take/{worker}?gpu=x", key=token)


def _done(p: CoordinatorProcess, ep: str, worker: str, token: str, job: str, out: Any) -> tuple[int, Any]:
    return http_json(
        "POST", f"{p.url}/v2/{ep}/job-done/{worker}/{job}?isStream=false", {"output": out}, key=token
    )


def test_a_worker_completes_only_the_jobs_it_holds(proc: CoordinatorProcess) -> None:
    ep = proc.admin.create_endpoint("id-held")
    t1, t2 = proc.admin.worker_token(ep, "w1"), proc.admin.worker_token(ep, "w2")
    job = http_json("POST", f"{proc.url}/v2/{ep}/run", {"input": {}}, key=proc.admin_key)[1]["id"]
    code, out = _done(proc, ep, "w1", t1, job, "forged")  # a queued job it never took
    assert code == 409 and "not held" in out["error"], out
    assert http_json("GET", f"{proc.url}/v2/{ep}/status/{job}", key=proc.admin_key)[1]["status"] == "IN_QUEUE"
    code, taken = _take(proc, ep, "w2", t2)
    assert code == 200 and taken["id"] == job
    assert _done(proc, ep, "w1", t1, job, "forged")[0] == 409  # held by another
    stream = http_json("POST", f"{proc.url}/v2/{ep}/job-stream/w1/{job}", {"output": "x"}, key=t1)
    assert stream == (200, {"ignored": f"job {job} is IN_PROGRESS"})  # nothing stored for w1
    assert _done(proc, ep, "w2", t2, job, "real") == (200, {"accepted": True})
    final = http_json("GET", f"{proc.url}/v2/{ep}/status/{job}", key=proc.admin_key)[1]
    assert final["status"] == "COMPLETED" and final["output"] == "real"


def test_a_worker_token_dies_with_its_endpoint_not_its_name(proc: CoordinatorProcess) -> None:
    ep = proc.admin.create_endpoint("id-gen")
    token = proc.admin.worker_token(ep, "w1")
    assert _take(proc, ep, "w1", token)[0] == 204
    proc.admin.call("DELETE", f"/admin/v1/endpoints/{ep}")
    assert _take(proc, ep, "w1", token)[0] == 401
    proc.admin.create_endpoint(ep)  # the same name, another endpoint
    http_json("POST", f"{proc.url}/v2/{ep}/run", {"input": {"secret": 1}}, key=proc.admin_key)
    code, out = _take(proc, ep, "w1", token)  # issue 12: this took the new endpoint's job
    assert code == 401 and "deleted" in out["error"], out
    assert _take(proc, ep, "w1", proc.admin.worker_token(ep, "w1"))[0] == 200


def test_an_assigned_workers_token_comes_from_desired_and_ends_with_its_endpoint(
    proc: CoordinatorProcess,
) -> None:
    code, reg = _register(proc, proc.admin_key, "id-gpu", GPUS)
    assert code == 200, reg
    node_token = reg["token"]
    ep = proc.admin.create_endpoint("id-placed", workersMin=1, workersMax=1, gpuTypeIds=["H100-80GB"])

    def desired() -> Any:
        _beat_gpu = {"inventory": {"hostname": "id-gpu", "gpus": GPUS}, "workers": []}
        http_json("POST", f"{proc.url}/node/v1/nodes/id-gpu/heartbeat", _beat_gpu, key=node_token)
        out = http_json("GET", f"{proc.url}/node/v1/nodes/id-gpu/desired?wait=0", key=node_token)[1]
        return [w for w in out["workers"] if w["endpoint_id"] == ep]

    worker = wait_until(desired, timeout=20, interval=0.2, what="a worker of id-placed on id-gpu")[0]
    token, wid = worker["env"]["RUNPOD_AI_API_KEY"], worker["worker_id"]
    assert token.startswith("tw2.")
    ping = f"{proc.url}/v2/{ep}/ping/{wid}?gpu=x"
    assert http_json("GET", ping, key=token) == (200, {"ok": True})
    assert http_json("GET", f"{proc.url}/v2/{ep}/ping/not-{wid}?gpu=x", key=token)[0] == 401
    proc.admin.call("DELETE", f"/admin/v1/endpoints/{ep}")
    assert http_json("GET", ping, key=token)[0] == 401
