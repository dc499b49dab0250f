"""Soak: a steady runsync load for a long while, through a real etcd, a ``tide-coordinator``
process and real runpod SDK workers; per window, latency percentiles and the resident memory
of every process, so a slow leak or a latency drift shows as a trend.  Not in CI.

    python -m bench.soak                                  # 30 minutes, 5-minute windows
    python -m bench.soak --minutes 1 --window-minutes 1   # a quick try

The SDK takes at most about one job a second per worker (it sleeps 1 s whenever it is full), so
the default load, 2 runsync/s on 4 workers, keeps them half busy: latency is Tide's, not a queue.
Each window prints: jobs completed, errors, runsync p50 / p99 / max (ms; the handler does
nothing, so this is what Tide adds), and RSS (MiB) of the coordinator, etcd and the workers.
Anchor (what a healthy run shows): no errors; p99 of the last window within 1.5x of the first;
coordinator RSS of the last window within 1.2x of the first (after warm-up).  Benchmarks print;
they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field

import aiohttp

from bench.jobs import pct
from tests.fixtures.coordinator import CoordinatorProcess, RunpodWorker
from tests.fixtures.etcd import EtcdServer, etcd_binary

ANCHOR_P99_DRIFT = 1.5
ANCHOR_RSS_DRIFT = 1.2


def rss_mib(pid: int | None) -> float:
    """Resident set size of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0


async def client(session: aiohttp.ClientSession, url: str, key: str, rate: float, box: list[Window]) -> None:
    """One runsync every 1/rate seconds (a new one even while earlier ones run)."""
    headers = {"Authorization": f"Bearer {key}"}

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url, json={"input": {"t": t0}}, headers=headers) as r:
                body = await r.json()
                ok = r.status == 200 and body.get("status") == "COMPLETED"
        except (aiohttp.ClientError, TimeoutError, ValueError):
            ok = False
        if ok:
            box[-1].latencies.append(time.perf_counter() - t0)
        else:
            box[-1].errors += 1

    tasks: set[asyncio.Task[None]] = set()
    while True:
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(1.0 / rate)


def row(n: int, w: Window, c: CoordinatorProcess, etcd: EtcdServer, workers: list[RunpodWorker]) -> str:
    lat = [x * 1000 for x in w.latencies] or [float("nan")]
    rss_w = sum(rss_mib(x.pid) for x in workers)
    return (
        f"{n:>6} {len(w.latencies):>7} {w.errors:>6} {pct(lat, 0.5):>8.1f} {pct(lat, 0.99):>8.1f} "
        f"{max(lat):>8.1f} {rss_mib(c.pid):>11.1f} {rss_mib(etcd.pid):>9.1f} {rss_w:>12.1f}"
    )


async def soak(minutes: float, window_min: float, rate: float, n_workers: int) -> None:
    etcd = EtcdServer()
    etcd.start()
    c = CoordinatorProcess(store_url=f"etcd://127.0.0.1:{etcd.client_port}", claim_grace_s=10.0)
    workers: list[RunpodWorker] = []
    try:
        c.start()
        admin = c.admin
        ep = admin.create_endpoint("soak")
        key = str(admin.create_key("soak")["key"])
        for i in range(n_workers):
            w = RunpodWorker(c.url, ep, f"w-{i}", admin.worker_token(ep, f"w-{i}"), "noop.py")
            workers.append(w.start())
        await asyncio.sleep(3.0)  # the SDK imports and first job-take
        print(f"{'window':>6} {'jobs':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'coord MiB':>11} {'etcd MiB':>9} {'workers MiB':>12}")  # fmt: skip
        box = [Window()]
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            load = asyncio.create_task(client(session, f"{c.url}/v2/{ep}/runsync", key, rate, box))
            rows: list[tuple[Window, float]] = []
            end = time.monotonic() + minutes * 60
            n = 0
            while time.monotonic() < end:
                await asyncio.sleep(min(window_min * 60, end - time.monotonic()))
                n += 1
                done, box[0] = box[0], Window()
                rows.append((done, rss_mib(c.pid)))
                print(row(n, done, c, etcd, workers), flush=True)
            load.cancel()
        anchor(rows)
    finally:
        for w in workers:
            w.cleanup()
        c.cleanup()
        etcd.stop()


def anchor(rows: list[tuple[Window, float]]) -> None:
    if not rows or not rows[0][0].latencies or not rows[-1][0].latencies:
        print("anchor: no completed jobs to compare")
        return
    (first, rss0), (last, rss1) = rows[0], rows[-1]
    p99_0, p99_1 = pct(first.latencies, 0.99), pct(last.latencies, 0.99)
    errors = sum(w.errors for w, _ in rows)
    print(
        f"anchor: errors {errors} (0); p99 last/first {p99_1 / p99_0:.2f}x (<= {ANCHOR_P99_DRIFT}x); "
        f"coordinator RSS last/first {rss1 / rss0 if rss0 else float('nan'):.2f}x (<= {ANCHOR_RSS_DRIFT}x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    ap.add_argument("--window-minutes", type=float, default=5.0, help="one printed row per window")
    ap.add_argument("--rate", type=float, default=2.0, help="runsync calls per second (default 2)")
    ap.add_argument("--workers", type=int, default=4, help="runpod SDK workers (default 4)")
    args = ap.parse_args()
    if etcd_binary() is None:
        print("etcd not installed; the soak needs it")
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"cores: {os.cpu_count()}; load average {load}; etcd, the coordinator, {args.workers} SDK workers "
        f"and this load generator share them; {args.rate:g} runsync/s for {args.minutes:g} min"
    )
    asyncio.run(soak(args.minutes, args.window_minutes, args.rate, args.workers))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
