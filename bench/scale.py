"""Cold start from zero: the first request on a scaled-to-zero endpoint until its result.

    cd /work/main && /tmp/venv/bin/python -m bench.scale [--runs 20] [--prewarm off|on|both]
                                                          [--etcd etcd://127.0.0.1:2379]

Runs the ``tide dev`` cluster in this process (coordinator + one node agent with simulated GPUs +
the process runtime; the in-memory store unless ``--etcd``), an endpoint on the unmodified echo
handler (examples/echo) with workersMin 0 and idleTimeout 1, and for each run: wait until the
endpoint has no worker process left, POST /runsync, and split the wait into stages from the
timestamps the parts already keep:

    schedule        job created (coordinator)        -> assignment planned (scheduler tick)
    node picks up   assignment planned               -> noded's plan made the worker's runner
    process start   runner made                      -> the runtime's start() returned (shim up)
    handler ready   start() returned                 -> first job-take seen by the coordinator
    job done        first job-take                   -> job finished (take, run, job-done)
    total           client sent /runsync             -> client got the result

The floor printed under the table is ``python -c "import runpod"`` alone: a handler cannot be
ready before its interpreter has imported the SDK, unless it is forked from a process that has
(``--prewarm on``: the process runtime's prewarm pool; ``both``, the default, runs each mode on its
own cluster and compares; the pool is waited for before measuring, and each run records whether its
worker was forked or exec'd).  Benchmarks print; they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tide.dev import DevCluster

ECHO = Path(__file__).resolve().parents[1] / "examples" / "echo"
STAGES = ["schedule", "node picks up", "process start", "handler ready", "job done", "total"]


def _args(ns: argparse.Namespace, state_dir: str, prewarm: bool) -> argparse.Namespace:
    """What ``tide dev`` would parse, for one node and the process runtime."""
    return argparse.Namespace(
        prewarm=prewarm,
        api_key="bench-admin",
        state_dir=state_dir,
        etcd=ns.etcd,
        host="127.0.0.1",
        port=0,
        gpus=ns.gpus,
        nodes=1,
        runtime="process",
        claim_grace=30.0,
        lost_after=15.0,
    )


async def _idle(cluster: DevCluster, agent: Any, ep: str, timeout: float = 60.0) -> None:
    """Until the endpoint has no assignment, no runner and no worker process left."""
    view = cluster._coordinator.view  # the bench reads the parts' own timestamps
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [a for a in view.assignments.values() if a.endpoint_id == ep]
        if not busy and not agent.runners and not await agent.runtime.list():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"endpoint {ep} did not scale to zero in {timeout} s")


async def _one(cluster: DevCluster, http: aiohttp.ClientSession, ep: str) -> dict[str, float]:
    coordinator = cluster._coordinator
    agent = cluster._agents[0]
    await _idle(cluster, agent, ep)
    sent = time.time()
    async with http.post(f"{cluster.url}/v2/{ep}/runsync", json={"input": {"cold": True}}) as resp:
        body = await resp.json()
    got = time.time()
    if body.get("status") != "COMPLETED":
        raise RuntimeError(f"cold start failed: {body}")
    worker = body["workerId"]
    assignment = coordinator.view.assignments[worker]  # still there: idleTimeout has not passed
    runner = agent.runners[worker]
    ready = coordinator.view.ready_at[worker]
    job, _ = await coordinator.ctx.read_job(ep, body["id"])
    shim_log = cluster.state_dir / "nodes" / "node-1" / "workers" / worker / "shim.log"
    forked = "prewarm: forked" in shim_log.read_text() if shim_log.exists() else False
    return {
        "forked": float(forked),
        "schedule": assignment.created_at - job.created_at,
        "node picks up": runner.planned_at - assignment.created_at,
        "process start": runner.start_returned_at - runner.planned_at,
        "handler ready": ready - runner.start_returned_at,
        "job done": job.finished_at - ready,
        "total": got - sent,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _table(runs: list[dict[str, float]]) -> str:
    lines = [f"{'stage':<15} {'p50 ms':>9} {'p90 ms':>9} {'min ms':>9} {'max ms':>9}"]
    for stage in STAGES:
        v = [r[stage] * 1000 for r in runs]
        lines.append(
            f"{stage:<15} {statistics.median(v):>9.1f} {_pct(v, 0.9):>9.1f} {min(v):>9.1f} {max(v):>9.1f}"
        )
    return "\n".join(lines)


def _import_floor(repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import runpod"], check=True, cwd=ECHO)
        best = min(best, time.perf_counter() - t0)
    return best


async def _bench(ns: argparse.Namespace, prewarm: bool) -> list[dict[str, float]]:
    cluster = DevCluster(_args(ns, tempfile.mkdtemp(prefix="tide-bench-scale-"), prewarm))
    await cluster.start()
    if prewarm:
        t0 = time.monotonic()
        ok = await cluster._agents[0].runtime.prewarmed()
        print(f"  prewarm pool {'ready' if ok else 'FAILED'} after {time.monotonic() - t0:.1f} s", flush=True)
    headers = {"Authorization": f"Bearer {cluster.api_key}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            spec = {"name": "cold", "image": f"dir://{ECHO}", "workersMin": 0, "workersMax": 1}
            spec |= {"idleTimeout": 1, "scalerType": "REQUEST_COUNT", "scalerValue": 1}
            async with http.post(f"{cluster.url}/admin/v1/endpoints", json=spec) as resp:
                resp.raise_for_status()
            await _one(cluster, http, "cold")  # warm the page cache and the code paths once
            runs = []
            for i in range(ns.runs):
                runs.append(await _one(cluster, http, "cold"))
                print(f"  run {i + 1:>2}: {runs[-1]['total'] * 1000:7.1f} ms", flush=True)
            return runs
    finally:
        await cluster.stop()


def _run(ns: argparse.Namespace, prewarm: bool) -> list[dict[str, float]]:
    print(f"--- prewarm {'on' if prewarm else 'off'} ---", flush=True)
    try:
        import uvloop

        return uvloop.run(_bench(ns, prewarm))
    except ImportError:
        return asyncio.run(_bench(ns, prewarm))


def _compare(off: list[dict[str, float]], on: list[dict[str, float]]) -> str:
    lines = [f"{'stage':<15} {'off p50':>9} {'on p50':>9} {'off p90':>9} {'on p90':>9}  (ms)"]
    for stage in ("process start", "handler ready", "job done", "total"):
        a = [r[stage] * 1000 for r in off]
        b = [r[stage] * 1000 for r in on]
        lines.append(
            f"{stage:<15} {statistics.median(a):>9.1f} {statistics.median(b):>9.1f} "
            f"{_pct(a, 0.9):>9.1f} {_pct(b, 0.9):>9.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--gpus", default="1xH100-80GB")
    p.add_argument("--etcd", default="", help="etcd URL (default: the in-process store, as tide dev)")
    p.add_argument("--prewarm", choices=["off", "on", "both"], default="both", help="the prewarm pool")
    ns = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = ns.etcd or "memory"
    print(f"cold start from zero: {ns.runs} runs, echo handler, process runtime, store {store}")
    modes = {"off": [False], "on": [True], "both": [False, True]}[ns.prewarm]
    results = {mode: _run(ns, mode) for mode in modes}
    for mode, runs in results.items():
        forked = sum(int(r["forked"]) for r in runs)
        print(f"prewarm {'on' if mode else 'off'}: {forked}/{len(runs)} workers forked from the pool")
        print(_table(runs))
    if len(results) == 2:
        print(_compare(results[False], results[True]))
    floor = _import_floor()
    print(f"floor: python -c 'import runpod' = {floor * 1000:.1f} ms (best of 3)")
    for mode, runs in results.items():
        ready = statistics.median(r["handler ready"] for r in runs)
        print(
            f"prewarm {'on' if mode else 'off'}: handler ready p50 is {ready / floor:.2f}x the import floor"
        )


if __name__ == "__main__":
    main()
