"""Job path benchmark: submitted -> COMPLETED throughput and runsync latency,
through a real ``tide-coordinator`` process, with workers on this machine.

    cd /work/main && /tmp/venv/bin/python -m bench.jobs [--stores memory,etcd] [--jobs 6000] [--sdk]

For each store (``memory://`` inside the coordinator, and a real etcd) it runs:

* throughput: ``--jobs`` jobs POSTed to /run by 64 concurrent clients while
  lightweight workers drain them; time from the first submission to the last
  accepted job-done (every job COMPLETED in the store);
* runsync latency at concurrency 1 and 64: the handler does nothing, so the
  whole latency is what Tide adds over the handler's own time.

The lightweight worker speaks the same worker HTTP protocol as the runpod SDK
(job-take-batch long-poll, job-done with form-labelled JSON) without the SDK's
overhead (its 1 s sleeps when full, its per-job logging).  With ``--sdk`` the
same is measured with real runpod SDK workers, for reference.  Clients and
lightweight workers send their requests through a lean keep-alive HTTP/1.1
client (``--client aiohttp`` for aiohttp's, which costs ~4x the CPU): they
share the cores they measure.

At concurrency 64 a runsync's latency cannot be below 64 / throughput
(Little's law): the figures print that floor next to the p50.

Targets (2-core machine): >= 2,000 jobs/s on etcd; runsync p50 <= 5 ms and
p99 <= 20 ms over the handler's time.  Benchmarks print; they do not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from tests.fixtures.coordinator import CoordinatorProcess, RunpodWorker
from tests.fixtures.etcd import EtcdServer, etcd_binary

TARGET_JOBS_PER_S = 2000.0
TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Figures:
    store: str
    worker: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, what: str, value: str, target: str = "") -> None:
        self.rows.append((what, value, target))


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes spent since boot (Linux /proc/stat, not idle or iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class AiohttpClient:
    """The hot requests through aiohttp's client (``--client aiohttp``)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s = session
        self.base = base

    async def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self.s.request(method, self.base + path, data=body, headers=headers) as resp:
            return resp.status, await resp.read()


class LeanClient:
    """Keep-alive HTTP/1.1 over asyncio streams, one request per connection at a
    time: the same requests as aiohttp's client for a fraction of its CPU (which
    was ~70% of this load generator's), so that the cores it shares go to the
    coordinator and etcd.  Answers must carry Content-Length (aiohttp's do)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._host_line = f"Host: {self.host}:{self.port}\r\n"

    async def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        reader, writer = (
            self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        )
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"{method} {path} HTTP/1.1\r\n{self._host_line}Content-Length: {len(body)}\r\n{extra}\r\n"
        writer.write(head.encode() + body)
        lines = (await reader.readuntil(b"\r\n\r\n")).lower().split(b"\r\n")
        fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        if b"chunked" in fields.get(b"transfer-encoding", b""):
            raise RuntimeError(f"{method} {path}: chunked answer; LeanClient reads Content-Length only")
        length = int(fields.get(b"content-length", b"0"))
        payload = await reader.readexactly(length) if length else b""
        if b"close" in fields.get(b"connection", b""):
            writer.close()
        else:
            self._idle.append((reader, writer))
        return int(lines[0][9:12]), payload

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


Client = AiohttpClient | LeanClient


class LightWorker:
    """job-take-batch -> job-done for each job, as fast as the coordinator allows."""

    def __init__(self, http: Client, ep: str, worker: str, token: str, batch: int):
        self.http = http
        self.take_path = f"/v2/{ep}/job-take-batch/{worker}?gpu=bench&batch_size={batch}&job_in_progress=0"
        self.done_path = f"/v2/{ep}/job-done/{worker}/{{job}}?gpu=bench&isStream=false"
        self.headers = {"Authorization": token}
        self.done_headers = {**self.headers, **FORM}
        self.done = 0

    async def run(self) -> None:
        while True:
            status, raw = await self.http.send("GET", self.take_path, b"", self.headers)
            if status == 204:
                continue
            jobs = json.loads(raw)
            if isinstance(jobs, dict):
                jobs = [jobs]
            await asyncio.gather(*(self._done(j["id"]) for j in jobs))

    async def _done(self, job: str) -> None:
        body = b'{"output": {"ok": true}}'
        status, _ = await self.http.send("POST", self.done_path.format(job=job), body, self.done_headers)
        if status == 200:
            self.done += 1


class Bench:
    def __init__(self, coordinator: CoordinatorProcess, session: aiohttp.ClientSession, http: Client) -> None:
        self.c = coordinator
        self.s = session  # admin calls and metrics
        self.http = http  # the measured requests
        self.admin = {"Authorization": f"Bearer {coordinator.admin_key}"}

    async def call(self, method: str, path: str, body: object = None) -> object:
        async with self.s.request(method, self.c.url + path, json=body, headers=self.admin) as resp:
            out = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {out}")
            return out

    async def endpoint(self, name: str) -> str:
        await self.call("POST", "/admin/v1/endpoints", {"name": name, "image": "dir:///bench"})
        return name

    async def token(self, ep: str, worker: str) -> str:
        out = await self.call("POST", f"/admin/v1/endpoints/{ep}/workers/{worker}/token")
        assert isinstance(out, dict)
        return str(out["token"])

    async def light_workers(self, ep: str, n: int, batch: int) -> list[LightWorker]:
        return [
            LightWorker(self.http, ep, f"lw-{i}", await self.token(ep, f"lw-{i}"), batch) for i in range(n)
        ]

    async def submit(self, ep: str, total: int, concurrency: int) -> float:
        path = f"/v2/{ep}/run"
        body = b'{"input": {"n": 1}}'
        headers = {**self.admin, "Content-Type": "application/json"}
        left = [total]

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                status, raw = await self.http.send("POST", path, body, headers)
                assert status == 200, (status, raw)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - t0

    async def throughput(self, ep: str, total: int, done: list[LightWorker] | None) -> tuple[float, float]:
        """(jobs/s submitted -> COMPLETED, jobs/s accepted by /run)."""
        start_done = self._completed(done)
        t0 = time.perf_counter()
        submit_s = await self.submit(ep, total, 64)
        while self._completed(done) - start_done < total:
            if done is None:
                await self._refresh_health(ep)
            await asyncio.sleep(0.005 if done is not None else 0.1)
        elapsed = time.perf_counter() - t0
        return total / elapsed, total / submit_s

    _health_completed = 0

    def _completed(self, done: list[LightWorker] | None) -> int:
        return sum(w.done for w in done) if done is not None else self._health_completed

    async def _refresh_health(self, ep: str) -> None:
        out = await self.call("GET", f"/v2/{ep}/health")
        assert isinstance(out, dict)
        self._health_completed = int(out["jobs"]["completed"])

    async def runsync(self, ep: str, concurrency: int, total: int) -> list[float]:
        path = f"/v2/{ep}/runsync"
        headers = {**self.admin, "Content-Type": "application/json"}
        latencies: list[float] = []
        left = [total]

        async def client() -> None:
            while left[0] > 0:
                left[0] -= 1
                t0 = time.perf_counter()
                _, raw = await self.http.send("POST", path, b'{"input": {}}', headers)
                out = json.loads(raw)
                latencies.append(time.perf_counter() - t0)
                assert out["status"] == "COMPLETED", out

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies

    async def commits(self) -> float:
        async with self.s.get(self.c.url + "/metrics", headers=self.admin) as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("tide_store_commit_seconds_count"):
                return float(line.split()[-1])
        return 0.0


def latency_rows(fig: Figures, label: str, lat: list[float]) -> None:
    p50, p99 = pct(lat, 0.50) * 1000, pct(lat, 0.99) * 1000
    fig.add(f"runsync p50 {label}", f"{p50:.2f} ms", f"<= {TARGET_P50_MS:.0f} ms {_ok(p50 <= TARGET_P50_MS)}")
    fig.add(f"runsync p99 {label}", f"{p99:.2f} ms", f"<= {TARGET_P99_MS:.0f} ms {_ok(p99 <= TARGET_P99_MS)}")
    fig.add(
        f"runsync mean / p90 / max {label}",
        f"{statistics.fmean(lat) * 1000:.1f} / {pct(lat, 0.9) * 1000:.1f} / {max(lat) * 1000:.0f} ms",
    )


def _ok(good: bool) -> str:
    return "MET" if good else "MISSED"


async def run_light(
    c: CoordinatorProcess, store: str, jobs: int, etcd_pid: int | None, client: str
) -> Figures:
    fig = Figures(store, f"lightweight (job-take-batch), {client} client")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
        http = LeanClient(c.url) if client == "lean" else AiohttpClient(s, c.url)
        b = Bench(c, s, http)
        ep = await b.endpoint("bench")
        workers = await b.light_workers(ep, 4, 64)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await b.throughput(ep, 500, workers)  # warm up
            commits0 = await b.commits()
            cpu0 = (cpu_seconds(c.pid), cpu_seconds(etcd_pid), time.process_time())
            busy0, t0 = machine_busy_seconds(), time.perf_counter()
            rate, submit_rate = await b.throughput(ep, jobs, workers)
            busy1, elapsed = machine_busy_seconds(), time.perf_counter() - t0
            cpu1 = (cpu_seconds(c.pid), cpu_seconds(etcd_pid), time.process_time())
            commits = await b.commits() - commits0
            target = TARGET_JOBS_PER_S
            fig.add(
                "throughput submitted->COMPLETED",
                f"{rate:,.0f} jobs/s",
                f">= {target:,.0f} {_ok(rate >= target)}",
            )
            fig.add("/run accept rate (during the above)", f"{submit_rate:,.0f} jobs/s")
            fig.add("group commits per job", f"{commits / jobs:.2f} (each job = 3 state changes)")
            coord_us, etcd_us, gen_us = ((b - a) / jobs * 1e6 for a, b in zip(cpu0, cpu1, strict=True))
            fig.add(
                "CPU per job: coordinator", f"{coord_us:.0f} us", f"-> {1e6 / coord_us:,.0f} jobs/s per core"
            )
            if etcd_pid is not None:
                fig.add("CPU per job: etcd", f"{etcd_us:.0f} us", f"-> {1e6 / etcd_us:,.0f} jobs/s per core")
            fig.add("CPU per job: load generator + workers", f"{gen_us:.0f} us")
            ours = (sum(cpu1) - sum(cpu0)) / elapsed
            others = max(0.0, (busy1 - busy0) / elapsed - ours)
            fig.add(
                "cores busy: ours / other processes", f"{ours:.2f} / {others:.2f}", f"of {os.cpu_count()}"
            )
            total = coord_us + etcd_us + gen_us
            cores = os.cpu_count() or 1
            fig.add(
                "roofline on this machine (all CPU)",
                f"{cores * 1e6 / total:,.0f} jobs/s",
                f"{cores} cores / {total:.0f} us",
            )
            latency_rows(fig, "c=1", await b.runsync(ep, 1, 400))
            latency_rows(fig, "c=64", await b.runsync(ep, 64, 3000))
            fig.add("c=64 floor: 64 in flight / throughput", f"{64 / rate * 1000:.2f} ms", "(Little's law)")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if isinstance(http, LeanClient):
                http.close()
    return fig


async def run_sdk(c: CoordinatorProcess, store: str, jobs: int) -> Figures:
    fig = Figures(store, "runpod SDK 1.12.0 (2 workers, concurrency 16)")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        b = Bench(c, s, AiohttpClient(s, c.url))
        ep = await b.endpoint("bench-sdk")
        env = {"NOOP_CONCURRENCY": "16", "RUNPOD_LOG_LEVEL": "ERROR"}
        workers = [
            RunpodWorker(c.url, ep, f"sdk-{i}", await b.token(ep, f"sdk-{i}"), "noop.py", env=env).start()
            for i in range(2)
        ]
        try:
            await b.runsync(ep, 1, 5)  # warm up: the workers are up
            latency_rows(fig, "c=1", await b.runsync(ep, 1, 50))
            rate, _ = await b.throughput(ep, jobs, None)
            fig.add("throughput submitted->COMPLETED", f"{rate:,.0f} jobs/s", "(reference)")
        finally:
            for w in workers:
                w.cleanup()
    return fig


def print_figures(figs: list[Figures]) -> None:
    print()
    print(f"{'store':8} {'worker':46} {'figure':38} {'value':>16}  target")
    for f in figs:
        for what, value, target in f.rows:
            print(f"{f.store:8} {f.worker:46} {what:38} {value:>16}  {target}")
    print()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", default="memory,etcd")
    ap.add_argument("--jobs", type=int, default=6000)
    ap.add_argument("--sdk", action="store_true", help="also measure with real runpod SDK workers")
    ap.add_argument("--sdk-jobs", type=int, default=600)
    ap.add_argument(
        "--client",
        choices=("lean", "aiohttp"),
        default="lean",
        help="HTTP client of the lightweight runs (lean: keep-alive over asyncio streams, less CPU)",
    )
    args = ap.parse_args()
    # The load generator shares the cores it measures.  At the default thresholds its
    # cyclic collector took ~20% of its CPU (gc callbacks), finding almost no garbage.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"cores: {os.cpu_count()}; load average {load}; coordinator, etcd and this load generator share them"
    )
    figs: list[Figures] = []
    for store in args.stores.split(","):
        etcd = None
        if store == "etcd":
            if etcd_binary() is None:
                print("etcd not installed; skipping the etcd store")
                continue
            etcd = EtcdServer()
            etcd.start()
            url = f"etcd://127.0.0.1:{etcd.client_port}"
        else:
            url = "memory://"
        coordinator = CoordinatorProcess(store_url=url, claim_grace_s=30.0)
        try:
            coordinator.start()
            figs.append(
                await run_light(coordinator, store, args.jobs, etcd.pid if etcd else None, args.client)
            )
            if args.sdk:
                figs.append(await run_sdk(coordinator, store, args.sdk_jobs))
        finally:
            coordinator.cleanup()
            if etcd is not None:
                etcd.stop()
        print(f"load average after {store}: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print_figures(figs[-2 if args.sdk else -1 :])
    print("All figures:")
    print_figures(figs)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop

            uvloop.run(main())
        except ImportError:
            asyncio.run(main())
