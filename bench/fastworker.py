"""The unmodified runpod worker through ``tide dev``, with and without Tide's fast worker (issue 17).

    PYTHONPATH=$PWD python -m bench.fastworker [--store etcd|memory] [--runsync 200] [--jobs 3000]

A ``tide dev`` cluster in this process (prewarm pool, process runtime; a real etcd started
here with ``--store etcd``, when an etcd binary is on PATH) runs an echo handler written as any
RunPod user would (``runpod.serverless.start``; concurrency_modifier from its env) on one
worker per endpoint.  For TIDE_FAST_WORKER=0 (the SDK as shipped: 1 s sleep when full, 0.1 s
queue poll) and =1 (Tide's event-driven waits) it measures:

* runsync latency at c=1, default concurrency (target: p50 <= 10 ms);
* jobs/s of one worker with concurrency_modifier 16: ``--jobs`` POSTed to /run by 64 clients,
  first submission to the last job COMPLETED (target: >= 500 jobs/s).

Printed with the machine, and the ratio fast / SDK.  Benchmarks print; they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tide.dev import DevCluster, parser

HANDLER = """
import os
import runpod


async def handler(job):
    return {"echo": job["input"]}


if __name__ == "__main__":
    runpod.serverless.start(
        {"handler": handler, "concurrency_modifier": lambda _: int(os.environ.get("CONCURRENCY", "1"))}
    )
"""


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


async def endpoint(http: aiohttp.ClientSession, url: str, image: Path, env: dict[str, str]) -> str:
    name = f"fw-{uuid.uuid4().hex[:6]}"
    spec = {"name": name, "image": f"dir://{image}", "workersMin": 1, "workersMax": 1, "env": env}
    async with http.post(f"{url}/admin/v1/endpoints", json=spec) as resp:
        assert resp.status < 300, await resp.text()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # warm: the worker is up and has served
        async with http.post(f"{url}/v2/{name}/runsync", json={"input": {"x": 0}}) as resp:
            if (await resp.json()).get("status") == "COMPLETED":
                return name
    raise SystemExit(f"endpoint {name}: no worker served within 120 s")


async def runsync(http: aiohttp.ClientSession, url: str, ep: str) -> float:
    t0 = time.perf_counter()
    async with http.post(f"{url}/v2/{ep}/runsync", json={"input": {"x": 1}}) as resp:
        body = await resp.json()
    assert body.get("status") == "COMPLETED", body
    return time.perf_counter() - t0


async def throughput(http: aiohttp.ClientSession, url: str, ep: str, total: int) -> float:
    ids: list[str] = []
    counter = iter(range(total))

    async def client() -> None:
        for _ in counter:
            async with http.post(f"{url}/v2/{ep}/run", json={"input": {"x": 1}}) as resp:
                ids.append((await resp.json())["id"])

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(64)))
    pending = list(ids)
    while pending:  # every job COMPLETED: check the last ones until none is left
        async with http.get(f"{url}/v2/{ep}/status/{pending[-1]}") as resp:
            status = (await resp.json())["status"]
        if status == "COMPLETED":
            pending.pop()
        else:
            await asyncio.sleep(0.005)
    return total / (time.perf_counter() - t0)


async def measure(url: str, key: str, image: Path, fast: str, n_sync: int, n_jobs: int) -> dict[str, float]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        ep1 = await endpoint(http, url, image, {"TIDE_FAST_WORKER": fast})
        lat = sorted([await runsync(http, url, ep1) for _ in range(n_sync)])
        ep16 = await endpoint(http, url, image, {"TIDE_FAST_WORKER": fast, "CONCURRENCY": "16"})
        jobs = n_jobs if fast == "1" else max(n_jobs // 20, 100)  # the SDK as shipped is slow
        rate = await throughput(http, url, ep16, jobs)
    return {
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1e3,
        "jobs_s": rate,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["etcd", "memory"], default="etcd")
    ap.add_argument("--runsync", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=3000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tide-bench-fw-"))
    etcd = None
    dev_argv = ["--port", "0", "--api-key", "bench-admin", "--gpus", "4xH100-80GB", "--no-flashboot"]
    if args.store == "etcd" and shutil.which("etcd"):
        from tests.fixtures.etcd import EtcdServer

        etcd = EtcdServer(data_root=str(root))
        etcd.start()
        dev_argv += ["--etcd", etcd.url.replace("http://", "etcd://")]
    store = "etcd" if etcd else "memory (no etcd binary on PATH)" if args.store == "etcd" else "memory"
    dev_args = parser().parse_args(dev_argv)
    dev_args.state_dir = str(root / "state")
    image = root / "image"
    image.mkdir()
    (image / "handler.py").write_text(HANDLER)
    cluster = DevCluster(dev_args)
    await cluster.start()
    try:
        results = {
            f: await measure(cluster.url, "bench-admin", image, f, args.runsync, args.jobs) for f in "01"
        }
    finally:
        await cluster.stop()
        if etcd is not None:
            etcd.stop()
        if os.environ.get("KEEP"):
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print_results(results, store)


def print_results(r: dict[str, dict[str, Any]], store: str) -> None:
    sdk, fast = r["0"], r["1"]
    print(f"machine: {machine()}; store: {store}; tide dev, prewarm, one worker per endpoint")
    print(f"{'':44} {'SDK as shipped':>15} {'fast worker':>12} {'ratio':>8}  target")
    rows = [
        ("runsync p50 at c=1, default concurrency (ms)", "p50_ms", "<= 10 ms"),
        ("runsync p99 at c=1, default concurrency (ms)", "p99_ms", ""),
        ("jobs/s, one worker, concurrency_modifier 16", "jobs_s", ">= 500/s"),
    ]
    for label, key, target in rows:
        ratio = fast[key] / sdk[key] if key == "jobs_s" else sdk[key] / fast[key]
        print(f"{label:44} {sdk[key]:15.1f} {fast[key]:12.1f} {ratio:7.1f}x  {target}")


if __name__ == "__main__":
    asyncio.run(main())
