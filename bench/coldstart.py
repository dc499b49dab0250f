"""Scale-from-zero to first result for a torch model, with and without FlashBoot.

    cd /work/main && /tmp/venv/bin/python -m bench.coldstart [--runs 10] [--hidden 16384]
        [--modes flashboot,plain-cold,plain-warm] [--prewarm both|on|off]
        [--t1-dir /dev/shm/tide-bench-t1 --mount-huge]

Runs ``tide dev`` in this process (coordinator + one node agent + the process runtime) with the
unmodified RunPod handler of examples/torch-mlp (an MLP 16 -> H -> H -> 4; H = 16384 makes 1 GiB
of float32 weights, loaded with ``flashboot.load`` and touched by one forward pass at start).
One endpoint per mode, workersMin 0, idleTimeout 1:

    flashboot    flashboot: true; the node's keeper kept the weights in T1 (shared RAM)
    t2           flashboot: true, T1 dropped before each run: the image comes back from local disk
    plain-cold   flashboot: false (the handler's load is safetensors' load_file), the file evicted
                 from the page cache before each run: a host that has not read it lately
    plain-warm   flashboot: false, the file left in the page cache: the best case for a plain load
    resume       issue 16: the torch-mlp endpoint with FlashBoot, command ``python handler.py``, on a
                 node with a suspend budget: scaled to zero, its worker is frozen in place; each run
                 waits until it is suspended and times the thaw to the first result
    resume-echo  the same with examples/echo (no torch, no weights)

Resume modes run on a cluster of their own (a suspend budget); the others on one without, so that
scale-to-zero stops their workers.  A resume's stages: placement, thaw, device_restore, handler_ready
(the runpod SDK's job-take loop waking up after the thaw), first_job.

Each run waits until no worker is left, POSTs /runsync, and reads the stages of the job's
``coldStart`` (placement, process_start, runtime_import, weight_restore, handler_ready, first_job)
plus the client's total.  Modes are interleaved run by run; one untimed run per mode first (it
generates the weights and fills T1).  ``--prewarm on`` starts workers from the process runtime's
prewarm pool (a zygote that has imported runpod's dependencies, torch and safetensors; each run
says whether its worker was forked); ``both`` runs each setting on its own cluster.

Lazily mapped weights (the page cache for load_file, T1 for FlashBoot on CPU) are faulted in by the
handler's warm-up pass, which lands in handler_ready, not weight_restore: compare totals.  Printed
with the floors: ``import runpod, torch`` in a fresh interpreter, and a cold sequential read of the
weights file.  Benchmarks print; they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from flashboot import Keeper
from flashboot._tmpfs import t1_backing
from tide.dev import DevCluster, parser

REPO = Path(__file__).resolve().parents[1]
MLP = REPO / "examples" / "torch-mlp"
STAGES = ["placement", "process_start", "runtime_import", "weight_restore", "handler_ready", "first_job"]
STAGES += ["thaw", "device_restore"]  # a resume's
RESUME_MODES = ("resume", "resume-echo")
ROWS = [*STAGES, "server total", "client total"]
PREWARM_MODULES = ("runpod", "torch", "safetensors.torch")
X = [[0.01 * i for i in range(16)]]
TIERS = ["t0", "t1", "t2", "source"]


class _Cluster(DevCluster):
    """tide dev, with the prewarm pool also preloading torch (what this handler imports), and T1
    optionally in a directory of the caller's (a huge-page tmpfs: ``--mount-huge``)."""

    prewarm = False
    t1_dir: str | None = None

    def flashboot_config(self, name: str) -> Any:
        config = super().flashboot_config(name)
        if config is None or self.t1_dir is None:
            return config
        return msgspec.structs.replace(config, shm_dir=os.path.join(self.t1_dir, name))

    def _runtime(self, name: str) -> Any:
        from noded.runtime import ProcessRuntime

        root = self.state_dir / "nodes" / name / "workers"
        if not self.prewarm:
            return ProcessRuntime(root)
        return ProcessRuntime(root, prewarm=True, prewarm_modules=PREWARM_MODULES)


class Bench:
    def __init__(self, cluster: _Cluster, http: aiohttp.ClientSession, weights: Path, hidden: int) -> None:
        self.cluster = cluster
        self.http = http
        self.weights = weights
        self.hidden = hidden

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.cluster.url + path, json=body) as r:
            payload = await r.json(content_type=None)
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {payload}")
            return payload

    async def endpoint(self, mode: str) -> str:
        env = {"PYTHONPATH": str(REPO), "TIDE_EXAMPLE_WEIGHTS": str(self.weights)}
        env["TIDE_EXAMPLE_MLP_HIDDEN"] = str(self.hidden)
        image = REPO / "examples" / "echo" if mode == "resume-echo" else MLP
        spec = {"name": mode, "image": f"dir://{image}", "env": env}
        spec["flashboot"] = mode in ("flashboot", "t2", "resume")
        if mode in RESUME_MODES:
            spec["command"] = ["python", "handler.py"]  # what most READMEs write
        spec |= {"workersMin": 0, "workersMax": 1, "idleTimeout": 1, "scalerType": "REQUEST_COUNT"}
        spec |= {"scalerValue": 1, "executionTimeoutMs": 600_000}
        await self.call("POST", "/admin/v1/endpoints", spec)
        return mode

    async def idle(self, timeout: float = 120.0) -> None:
        """Until no worker is assigned or running anywhere."""
        agent = self.cluster._agents[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await self.call("GET", "/admin/v1/workers"):
                running = [w for w in await agent.runtime.list() if w.state == "running"]
                if not running and not agent.runners:
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("workers did not scale to zero")

    def prepare(self, mode: str) -> None:
        if mode == "plain-cold":
            _evict(self.weights)
        elif mode == "t2":  # what a keeper short of RAM does: T1 goes, the disk image stays
            host = self.cluster._agents[0].flashboot
            assert host is not None
            Keeper(msgspec.structs.replace(host.keeper.config, ram_budget_bytes=0)).enforce()

    async def suspended(self, ep: str, timeout: float = 120.0) -> None:
        """Until the endpoint's one worker is frozen (noded reports the RAM it holds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.call("GET", f"/admin/v1/workers?endpoint={ep}")
            if len(found) == 1 and found[0]["state"] == "suspended" and found[0]["ramBytes"] > 0:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{ep}'s worker was not suspended")

    async def run(self, mode: str, *, first: bool = False) -> dict[str, float]:
        if mode in RESUME_MODES:
            if not first:  # the first run starts it; the others wait until it is frozen
                await self.suspended(mode)
        else:
            await self.idle()
        self.prepare(mode)
        sent = time.time()
        out = await self.call("POST", f"/v2/{mode}/runsync?wait=300000", {"input": {"x": X}})
        got = time.time()
        if out.get("status") != "COMPLETED":
            raise RuntimeError(f"{mode}: {out}")
        if first:
            return {}
        cold = await self.cold_start(mode, out["id"])
        row = {s["stage"]: s["ms"] / 1000 for s in cold["stages"]}
        row |= {"server total": cold["totalMs"] / 1000, "client total": got - sent}
        row["forked"] = float(self._forked(out["workerId"]))
        row["tier"] = TIERS.index(cold["weightTier"]) if cold["weightTier"] in TIERS else -1
        row["resumed"] = float(cold.get("path") == "resume")
        return row

    async def cold_start(self, ep: str, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            cold = (await self.call("GET", f"/v2/{ep}/status/{job_id}")).get("coldStart")
            if cold and (cold["complete"] or time.monotonic() > deadline):
                return dict(cold)
            await asyncio.sleep(0.05)

    def _forked(self, worker: str) -> bool:
        log = self.cluster.state_dir / "nodes" / "node-1" / "workers" / worker / "shim.log"
        return log.exists() and "prewarm: forked" in log.read_text()


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _args(state_dir: str, suspend_mb: int = 0) -> argparse.Namespace:
    # resume modes: a GPU per endpoint, so that one's fresh start never evicts another's suspended worker
    gpus = "2xH100-80GB" if suspend_mb else "1xH100-80GB"
    argv = ["--port", "0", "--api-key", "bench-admin", "--state-dir", state_dir, "--gpus", gpus]
    argv += ["--suspend-budget-mb", str(suspend_mb)]
    return parser().parse_args([*argv, "--flashboot-ram-gb", "4", "--flashboot-disk-gb", "8"])


async def _bench(ns: argparse.Namespace, prewarm: bool, weights: Path) -> dict[str, list[dict[str, float]]]:
    fresh = [m for m in ns.modes if m not in RESUME_MODES]
    resume = [m for m in ns.modes if m in RESUME_MODES]
    runs: dict[str, list[dict[str, float]]] = {}
    if fresh:
        runs |= await _bench_on(ns, prewarm, weights, fresh, suspend_mb=0)
    if resume:
        runs |= await _bench_on(
            ns, prewarm, weights, resume, suspend_mb=8192
        )  # a 1 GiB model worker holds ~2.4 GiB
    return runs


async def _bench_on(
    ns: argparse.Namespace, prewarm: bool, weights: Path, modes: list[str], *, suspend_mb: int
) -> dict[str, list[dict[str, float]]]:
    cluster = _Cluster(_args(tempfile.mkdtemp(prefix="tide-bench-coldstart-"), suspend_mb))
    cluster.prewarm = prewarm
    cluster.t1_dir = ns.t1_dir
    await cluster.start()
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    try:
        if prewarm:
            t0 = time.monotonic()
            ok = await cluster._agents[0].runtime.prewarmed(timeout=180)
            print(f"  prewarm pool {'ready' if ok else 'FAILED'} after {time.monotonic() - t0:.1f} s")
        headers = {"Authorization": "Bearer bench-admin"}
        async with aiohttp.ClientSession(headers=headers) as http:
            bench = Bench(cluster, http, weights, ns.hidden)
            for mode in modes:
                await bench.endpoint(mode)
                await bench.run(mode, first=True)  # untimed: generates the weights, fills T1
            for i in range(ns.runs):
                for mode in modes:
                    row = await bench.run(mode)
                    runs[mode].append(row)
                    forked = " forked" if row["forked"] else ""
                    forked += " resumed" if row["resumed"] else ""
                    print(
                        f"  run {i + 1:>2} {mode:<10} {row['client total'] * 1000:8.1f} ms{forked}",
                        flush=True,
                    )
    finally:
        await cluster.stop()
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
    return runs


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _table(runs: list[dict[str, float]]) -> str:
    lines = [f"  {'stage':<15} {'p50 ms':>9} {'p90 ms':>9} {'min ms':>9} {'max ms':>9}"]
    for stage in ROWS:
        v = [r[stage] * 1000 for r in runs if stage in r]
        if v:
            p50, p90 = statistics.median(v), _pct(v, 0.9)
            lines.append(f"  {stage:<15} {p50:>9.1f} {p90:>9.1f} {min(v):>9.1f} {max(v):>9.1f}")
    return "\n".join(lines)


def _floors(weights: Path) -> None:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import runpod, torch"], check=True, cwd=MLP)
        best = min(best, time.perf_counter() - t0)
    print(f"floor: python -c 'import runpod, torch' = {best * 1000:.0f} ms (best of 3)")
    _evict(weights)
    size = weights.stat().st_size
    t0 = time.perf_counter()
    with open(weights, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass
    s = time.perf_counter() - t0
    print(f"floor: cold sequential read of the weights = {s * 1000:.0f} ms ({size / s / 1e9:.2f} GB/s)")


def _summary(results: dict[bool, dict[str, list[dict[str, float]]]]) -> None:
    print("\nsummary (client total, p50 / p90 ms)")
    for prewarm, runs in results.items():
        p50 = {m: statistics.median(r["client total"] for r in rows) for m, rows in runs.items() if rows}
        cells = "  ".join(
            f"{m} {p50[m] * 1000:.0f} / {_pct([r['client total'] for r in runs[m]], 0.9) * 1000:.0f}"
            for m in p50
        )
        print(f"  prewarm {'on ' if prewarm else 'off'}: {cells}")
        if "flashboot" in p50:
            for base in ("plain-cold", "plain-warm"):
                if base in p50:
                    print(
                        f"    flashboot vs {base}: {p50[base] / p50['flashboot']:.2f}x faster (target >= 5x)"
                    )
            verdict = "meets" if p50["flashboot"] <= 1.0 else "misses"
            print(f"    flashboot p50 {p50['flashboot']:.2f} s {verdict} the <= 1.0 s target")
    for prewarm, runs in results.items():
        for mode in RESUME_MODES:
            if runs.get(mode):
                v = [r["client total"] for r in runs[mode]]
                ready = statistics.median(r.get("handler_ready", 0.0) for r in runs[mode])
                verdict = "meets" if statistics.median(v) <= 0.2 else "misses"
                print(
                    f"  {mode} (prewarm {'on' if prewarm else 'off'}): resume to first result p50 "
                    f"{statistics.median(v) * 1000:.0f} ms ({verdict} the <= 200 ms target); of it, "
                    f"handler_ready (the SDK's job-take waking after the thaw) p50 {ready * 1000:.0f} ms"
                )
    on, off = results.get(True, {}), results.get(False, {})
    if on.get("flashboot") and off.get("plain-cold"):
        fb = statistics.median(r["client total"] for r in on["flashboot"])
        plain = statistics.median(r["client total"] for r in off["plain-cold"])
        print(
            f"  FlashBoot (prewarmed process + weights from T1) vs neither (fresh process, weights "
            f"read from disk): {plain / fb:.2f}x faster (target >= 5x)"
        )


async def _generate(weights: Path, hidden: int) -> None:
    """Make the weights file once, the way the handler would (outside the timed runs)."""
    code = "import runpy, sys; runpy.run_path(sys.argv[1] + '/handler.py', run_name='gen')"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TIDE_EXAMPLE_WEIGHTS": str(weights)}
    env["TIDE_EXAMPLE_MLP_HIDDEN"] = str(hidden)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(MLP), env=env)
    if await proc.wait() != 0:
        raise RuntimeError("generating the weights failed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--hidden", type=int, default=16384, help="MLP width: 16384 = 1 GiB of weights")
    p.add_argument("--modes", default="flashboot,plain-cold,plain-warm")
    p.add_argument("--prewarm", choices=["off", "on", "both"], default="both")
    p.add_argument("--t1-dir", default=None, help="FlashBoot T1 directory (default: under /dev/shm)")
    p.add_argument(
        "--mount-huge",
        action="store_true",
        help="mount a tmpfs with huge=within_size at --t1-dir for the run (root; what Ansible sets up)",
    )
    ns = p.parse_args()
    ns.modes = ns.modes.split(",")
    if ns.mount_huge and ns.t1_dir is None:
        p.error("--mount-huge needs --t1-dir")
    if not ns.mount_huge:
        _main(ns)
        return
    os.makedirs(ns.t1_dir, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6g,huge=within_size", "tide-t1", ns.t1_dir], check=True
    )
    try:
        _main(ns)
    finally:
        subprocess.run(["umount", ns.t1_dir], check=False)


def _main(ns: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="tide-bench-weights-"))
    weights = work / f"torch-mlp-{ns.hidden}.safetensors"
    try:
        asyncio.run(_generate(weights, ns.hidden))
        size = weights.stat().st_size
        print(
            f"cold start from zero: torch-mlp H={ns.hidden} ({size / 2**30:.2f} GiB), {ns.runs} runs per mode"
        )
        _floors(weights)
        backing = t1_backing(ns.t1_dir or "/dev/shm")
        pages = "2 MiB" if backing.huge_pages else "4 KiB"
        print(f"T1 on {backing.fstype} {backing.mount_point} huge={backing.huge} ({pages} pages)")
        settings = {"off": [False], "on": [True], "both": [False, True]}[ns.prewarm]
        results: dict[bool, dict[str, list[dict[str, float]]]] = {}
        for prewarm in settings:
            print(f"\nprewarm {'on' if prewarm else 'off'}:")
            results[prewarm] = asyncio.run(_bench(ns, prewarm, weights))
            for mode, runs in results[prewarm].items():
                forked = sum(int(r["forked"]) for r in runs)
                tiers = sorted({TIERS[int(r["tier"])] if r["tier"] >= 0 else "?" for r in runs})
                print(
                    f"\n {mode} (prewarm {'on' if prewarm else 'off'}, {forked}/{len(runs)} forked, "
                    f"weights from {'/'.join(tiers)})"
                )
                print(_table(runs))
        _summary(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
