"""MIG end to end in ``tide dev`` (in process): on-demand partitioning of simulated MIG cards.

One host with an H100 and an RTX PRO 6000 in the MIG pool (``--gpus ...:mig``: MIG-enabled and
empty) and a whole H100.  Endpoints asking for an RTX 1g.24gb slice, an H100 2g.20gb slice and a
whole H100 share it; each slice is cut on demand, and each worker sees only its own device.  A
card is re-cut for another endpoint only once the slice in the way is idle.  Operators plan and
apply layouts through the admin API and ``tide mig``.  Tests wait (bounded) for states, never on
timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.fixtures.coordinator import REPO_ROOT
from tide.api.errors import TideError
from tide.cli.main import main as tide_cli
from tide.dev import DevCluster, parser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HANDLERS = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers'}"
KEY = "tk_mig_test"
T = TypeVar("T")


class Dev:
    def __init__(self, cluster: DevCluster, session: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with self.session.request(method, self.cluster.url + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.call(method, path, body)
        assert status < 300, (method, path, status, payload)
        return payload

    async def endpoint(self, gpu: str) -> str:
        name = f"ep-{uuid.uuid4().hex[:8]}"
        spec = {"name": name, "image": HANDLERS, "command": ["python", "-u", "mig_visible.py"]}
        spec |= {"gpuTypeIds": [gpu], "workersMin": 1, "workersMax": 1}
        await self.ok("POST", "/admin/v1/endpoints", spec)
        return name

    async def gpus(self) -> list[dict[str, Any]]:
        nodes = await self.ok("GET", "/admin/v1/nodes")
        return list(nodes[0]["inventory"]["gpus"])

    async def worker_of(self, ep: str) -> dict[str, Any]:
        async def placed() -> dict[str, Any] | None:
            found = await self.ok("GET", f"/admin/v1/workers?endpoint={ep}")
            return found[0] if found and found[0]["devices"] else None

        return await wait_for(placed, f"a worker of {ep} on a device")

    async def visible(self, ep: str) -> dict[str, Any]:
        out = await self.ok("POST", f"/v2/{ep}/runsync?wait=60000", {"input": {}})
        assert out["status"] == "COMPLETED", out
        return dict(out["output"])


async def wait_for(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    async with asyncio.timeout(timeout):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.1)


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[Dev]:
    argv = ["--port", "0", "--api-key", KEY, "--state-dir", str(tmp_path), "--claim-grace", "5"]
    argv += ["--gpus", "1xH100-80GB:mig,1xRTXPRO6000-96GB:mig,1xH100-80GB", "--mig-recut-interval", "1"]
    cluster = DevCluster(parser().parse_args(argv))
    await cluster.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Dev(cluster, session)
    finally:
        runtimes = [a.runtime for a in cluster._agents]
        await cluster.stop(stop_workers=False)
        # The workers by PID, without the dev cluster's 5 s grace: nothing here needs it.
        await asyncio.gather(*[_kill(rt, w.id) for rt in runtimes for w in await rt.list()])


async def _kill(runtime: Any, worker_id: str) -> None:
    with contextlib.suppress(TideError):
        await runtime.stop(worker_id, grace=0.1)
        await runtime.delete(worker_id)


def _instance(gpu: dict[str, Any], uuid_: str) -> dict[str, Any] | None:
    return next((i for i in gpu["migInstances"] if i["uuid"] == uuid_), None)


async def test_slices_and_a_whole_card_share_a_host_and_recut_only_idle_slices(dev: Dev) -> None:
    h100_mig, rtx, h100 = await dev.gpus()
    assert (h100_mig["migEnabled"], rtx["migEnabled"], h100["migEnabled"]) == (True, True, False)
    assert h100_mig["migInstances"] == rtx["migInstances"] == []
    small = await dev.endpoint("RTXPRO6000-96GB:1g.24gb")
    mid = await dev.endpoint("H100-80GB:2g.20gb")
    whole = await dev.endpoint("H100-80GB")

    # Each slice was cut on demand; each worker sees exactly its own device.
    placed = {ep: await dev.worker_of(ep) for ep in (small, mid, whole)}
    gpus = {g["uuid"]: g for g in await dev.gpus()}
    small_dev, mid_dev = placed[small]["devices"], placed[mid]["devices"]
    assert _instance(gpus[rtx["uuid"]], small_dev[0])["profile"] == "1g.24gb"  # type: ignore[index]
    assert _instance(gpus[h100_mig["uuid"]], mid_dev[0])["profile"] == "2g.20gb"  # type: ignore[index]
    assert placed[whole]["devices"] == [h100["uuid"]]
    for ep in (small, mid, whole):
        seen = await dev.visible(ep)
        assert seen["cuda"] == seen["nvidia"] == placed[ep]["devices"][0]
    assert small_dev[0].startswith("MIG-") and mid_dev[0].startswith("MIG-")
    layout = await dev.ok("GET", f"/admin/v1/nodes/node-1/gpus/{rtx['uuid']}/mig")
    assert (layout["wanted"], layout["state"], layout["source"]) == (["1g.24gb"], "settled", "scheduler")

    # The whole RTX card as 4g.96gb would destroy the 1g a worker holds: not now, with a reason.
    big = await dev.endpoint("RTXPRO6000-96GB:4g.96gb")

    async def waiting() -> str | None:
        reason = str((await dev.ok("GET", f"/admin/v1/endpoints/{big}")).get("placement", ""))
        return reason if "4g.96gb" in reason else None

    assert "no MIG card can be re-cut" in await wait_for(waiting, "the big endpoint's reason")
    assert (await dev.visible(small))["cuda"] == small_dev[0]  # still there, still serving
    assert [i["uuid"] for i in (await dev.gpus())[1]["migInstances"]] == small_dev

    # Once the small endpoint is gone its slice is idle, and the card is re-cut for the big one.
    await dev.ok("DELETE", f"/admin/v1/endpoints/{small}")
    big_worker = await dev.worker_of(big)
    rtx_now = (await dev.gpus())[1]
    assert [i["profile"] for i in rtx_now["migInstances"]] == ["4g.96gb"]
    assert big_worker["devices"] == [rtx_now["migInstances"][0]["uuid"]] != small_dev
    assert (await dev.visible(big))["cuda"] == big_worker["devices"][0]

    async def marked_busy() -> bool:  # noded marks the slice its worker holds
        return bool((await dev.gpus())[1]["migInstances"][0]["busy"])

    assert await wait_for(marked_busy, "the big slice reported busy")


async def test_operators_plan_and_apply_layouts(dev: Dev) -> None:
    mid = await dev.endpoint("H100-80GB:2g.20gb")
    held = (await dev.worker_of(mid))["devices"][0]
    path = "/admin/v1/nodes/node-1/gpus/0/mig"
    # A layout without the busy 2g is refused, naming the worker that holds it.
    status, body = await dev.call("POST", path, {"layout": ["7g.80gb"], "dryRun": True})
    assert status == 409 and "in use" in body["error"], body
    status, body = await dev.call("POST", path, {"layout": ["9g.99gb"], "dryRun": True})
    assert status == 400, body
    plan = await dev.ok("POST", path, {"layout": ["2g.20gb", "3g.40gb", "1g.10gb"], "dryRun": True})
    assert plan["destroy"] == [] and sorted(s["profile"] for s in plan["create"]) == ["1g.10gb", "3g.40gb"]
    assert (await dev.gpus())[0]["migInstances"][0]["uuid"] == held  # a plan changes nothing

    # `tide mig apply` stores it; noded cuts the card around the busy slice.
    out = await asyncio.to_thread(
        _cli, dev.cluster.url, "mig", "apply", "node-1", "0", "2g.20gb,3g.40gb", "1g.10gb"
    )
    assert "destroy: nothing" in out and "wanted [3g.40gb" in out, out

    async def cut() -> list[dict[str, Any]] | None:
        insts = (await dev.gpus())[0]["migInstances"]
        return insts if len(insts) == 3 else None

    insts = await wait_for(cut, "the operator's layout")
    assert sorted(i["profile"] for i in insts) == ["1g.10gb", "2g.20gb", "3g.40gb"]
    assert held in [i["uuid"] for i in insts]
    assert (await dev.visible(mid))["cuda"] == held
    gpus_out = await asyncio.to_thread(_cli, dev.cluster.url, "gpus")
    assert "2g.20gb*" in gpus_out and "3g.40gb" in gpus_out and "whole GPU" in gpus_out
    # Released: the slices stay, noded no longer manages the card.
    await asyncio.to_thread(_cli, dev.cluster.url, "mig", "release", "node-1", "0")
    state = await dev.ok("GET", path)
    assert (state["wanted"], state["state"], len(state["instances"])) == (None, "unmanaged", 3)


def _cli(url: str, *argv: str) -> str:
    """The ``tide`` CLI as an operator runs it (blocking: call it in a thread)."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = tide_cli(["--url", url, "--api-key", KEY, *argv])
    assert code == 0, buf.getvalue()
    return buf.getvalue()
