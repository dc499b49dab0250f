"""Scheduling benchmark: the placer alone, and autoscaler ticks per second.

    cd /work/main && /tmp/venv/bin/python -m bench.scheduling [--hosts 1000] [--workers 1000] [--repeat 5]

The placer places ``--workers`` new workers (gpuCount 1/2/4/8 mixed, three GPU
types with ordered fallbacks, data-center constraints, ~20% of hosts already
busy, images and FlashBoot snapshots on some hosts) onto ``--hosts`` simulated
hosts of 8 GPUs each, one ``plan_placement`` call, index build included.  It
also runs the same at 10x (to show cost grows with workers + hosts, not their
product), the floor (the same call with no requests: reading the snapshot
into the capacity index, which any placer must do once) and an
overcommitted pass where most requests fail (the reason path), and the first
case again with CPU/RAM asks (``--asks``-style: hosts of 64 CPUs / 1 TiB, each
worker asking 4-12 CPUs and 16-96 GiB per GPU, so CPU binds before GPUs on
dense hosts and the placer must skip hosts the GPU buckets offer).
Target: <= 1 s for 1,000 workers on 1,000 hosts.  Benchmarks print; they do
not assert.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from coordinator.scheduling import (
    ClusterSnapshot,
    NodeSnapshot,
    PlacementRequest,
    QueueStats,
    ScalerState,
    WorkerView,
    compute_desired_workers,
    plan_placement,
)
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory

DCS = ["EU-RO-1", "US-TX-3", "CA-MTL-1", "US-KS-2"]
TYPES = ["H100-80GB", "A100-80GB", "L40S-48GB"]
TARGET_S = 1.0


def make_cluster(hosts: int, rng: random.Random, *, asks: bool = False) -> ClusterSnapshot:
    nodes = []
    for h in range(hosts):
        type_id = TYPES[h % len(TYPES)]
        gpus = [GpuInfo(index=i, uuid=f"GPU-{h}-{i}", type_id=type_id) for i in range(8)]
        busy = [g.uuid for g in gpus if rng.random() < 0.2]
        nodes.append(
            NodeSnapshot(
                node_id=f"node-{h}",
                inventory=NodeInventory(
                    hostname=f"host-{h}",
                    datacenter=DCS[h % len(DCS)],
                    gpus=gpus,
                    images=[f"img-{h % 50}"] if rng.random() < 0.3 else [],
                    cpus=64 if asks else 0,
                    memory_bytes=(1 << 40) if asks else 0,
                ),
                in_use=busy,
                requested_cpus=8.0 * len(busy) if asks else 0.0,
                requested_memory_mb=(64 << 10) * len(busy) if asks else 0,
                flashboot_endpoints=[f"ep-{h % 100}"] if rng.random() < 0.1 else [],
                revision=h,
            )
        )
    return ClusterSnapshot(nodes=nodes, revision=1)


def make_requests(
    workers: int, rng: random.Random, *, endpoints: int = 100, asks: bool = False
) -> list[PlacementRequest]:
    per, extra = divmod(workers, endpoints)
    requests = []
    for e in range(endpoints):
        n = per + (1 if e < extra else 0)
        first = rng.choice(TYPES)
        fallback = [t for t in TYPES if t != first][: rng.randint(0, 2)]
        gpu_count = rng.choice([1, 1, 1, 1, 2, 2, 4, 8])
        cpus = gpu_count * rng.choice([4, 8, 12]) if asks else 0
        memory_mb = gpu_count * rng.choice([16, 64, 96]) << 10 if asks else 0
        spec = EndpointSpec(
            name=f"ep-{e}",
            image=f"img-{e % 50}",
            gpu_type_ids=[first, *fallback],
            gpu_count=gpu_count,
            data_center_ids=rng.sample(DCS, rng.randint(0, 2)),
            cpus=cpus,
            memory_mb=memory_mb,
        )
        ids = [f"ep-{e}-w{i}" for i in range(n)]
        requests.append(PlacementRequest(endpoint_id=f"ep-{e}", spec=spec, worker_ids=ids))
    return requests


def time_placer(hosts: int, workers: int, repeat: int, *, endpoints: int = 100, asks: bool = False) -> None:
    rng = random.Random(42)
    snapshot = make_cluster(hosts, rng, asks=asks)
    requests = make_requests(workers, rng, endpoints=endpoints, asks=asks)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = plan_placement(snapshot, requests)
        times.append(time.perf_counter() - t0)
    floors = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan_placement(snapshot, [])
        floors.append(time.perf_counter() - t0)
    floor = statistics.median(floors)
    best, med = min(times), statistics.median(times)
    unplaced = sum(len(w) for w in plan.unplaced.values())
    gpus = sum(len(a.devices) for a in plan.assignments)
    print(
        f"placer  {workers:>6} workers / {hosts:>6} hosts x 8 GPUs ({endpoints} endpoints"
        f"{', CPU/RAM asks' if asks else ''}): "
        f"median {med * 1e3:8.1f} ms, best {best * 1e3:8.1f} ms, "
        f"{med / max(workers, 1) * 1e6:6.1f} us/worker; placed {len(plan.assignments)} "
        f"({gpus} GPUs), unplaced {unplaced}"
    )
    print(f"        floor (index build, no requests) {floor * 1e3:8.1f} ms = {floor / med:.0%} of the median")
    if hosts == 1000 and workers == 1000 and endpoints == 100 and not asks:
        verdict = "OK" if med <= TARGET_S else "OVER TARGET"
        print(f"        target <= {TARGET_S:.1f} s for 1,000 workers on 1,000 hosts: {verdict}")


def time_autoscaler(ticks: int) -> None:
    spec = EndpointSpec(name="ep", image="img", workers_max=50, concurrency_per_worker=4)
    workers = [
        WorkerView(worker_id=f"w{i}", state="running" if i % 3 else "idle", busy=i % 3, idle_since=0.0)
        for i in range(20)
    ]
    state = ScalerState()
    t0 = time.perf_counter()
    for i in range(ticks):
        load = (i * 7) % 40
        stats = QueueStats(in_queue=load // 2, in_progress=load - load // 2, oldest_queued_age_s=float(i % 9))
        state = compute_desired_workers(spec, stats, workers, state, 1000.0 + i * 0.5).state
    elapsed = time.perf_counter() - t0
    print(
        f"autoscaler {ticks} ticks (20 workers, QUEUE_DELAY, 2 ticks/s of sim time): "
        f"{ticks / elapsed:,.0f} ticks/s ({elapsed / ticks * 1e6:.1f} us/tick)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    time_placer(args.hosts, args.workers, args.repeat)
    time_placer(args.hosts * 10, args.workers * 10, max(1, args.repeat // 2), endpoints=1000)
    # Overcommitted: 4x the free GPUs asked for, so most requests end on the reason path.
    time_placer(args.hosts, args.workers * 8, max(1, args.repeat // 2), endpoints=1000)
    time_placer(args.hosts, args.workers, args.repeat, asks=True)
    time_placer(args.hosts, args.workers * 8, max(1, args.repeat // 2), endpoints=1000, asks=True)
    time_autoscaler(20_000)


if __name__ == "__main__":
    main()
