"""GPU-hours by policy on the generated US/EU day, and how fast the simulator runs it.

    cd /work/main && PYTHONPATH=. .venv/bin/python -m bench.simulate [--hosts 20] [--requests 20000]
        [--seed 1] [--warmup-days 2] [--tick 1] [--skip-best-static]

Generates the day (``tide simulate gen-trace``) and a fleet of ``--hosts`` hosts (half US, half
EU, each 4x H100-80GB + 4x RTX PRO 6000, all in the MIG pool), then runs ``dynamic``, ``whole``
and ``best-static`` (every named layout that can serve the trace; the cheapest meeting the
dynamic run's p95).  Prints the machine, gpu_hours per policy, dynamic's saving against the best
static layout and against whole cards, p95 queue delay, and per run the wall time, requests/s
and peak memory.  Targets from issue 18 are printed beside the figures; benchmarks print, they
do not assert.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
from pathlib import Path

from simulate import SimSettings, best_static, load_fleet, load_trace, parse_policy, simulate
from simulate._gen import fleet_toml, gen_trace

TARGET_SAVING = 0.30  # issue 18: >= 30% fewer GPU-hours than the best static layout
TARGET_SPEED = (1_000_000, 60.0)  # a day of >= 1M requests in <= 60 s


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup-days", type=int, default=2)
    p.add_argument("--tick", type=float, default=1.0)
    p.add_argument("--skip-best-static", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tide-bench-sim-"))
    gen_trace(str(tmp / "day.jsonl"), requests=args.requests, seed=args.seed)
    (tmp / "fleet.toml").write_text(fleet_toml(args.hosts))
    fleet = load_fleet(str(tmp / "fleet.toml"))
    trace = load_trace(str(tmp / "day.jsonl"), fleet)
    settings = SimSettings(warmup_days=args.warmup_days, tick_s=args.tick)
    print(f"machine: {_machine()}")
    print(
        f"day: {args.requests} requests (seed {args.seed}), {args.hosts} hosts x 8 MIG cards, "
        f"{args.warmup_days} warm-up days, pass every {args.tick} s"
    )
    runs = {
        name: simulate(trace, fleet, parse_policy(name, fleet), settings=settings)
        for name in ("dynamic", "whole")
    }
    best = None
    if not args.skip_best_static:
        best, tried = best_static(trace, fleet, runs["dynamic"].p95_queue_delay_s, settings=settings)
        print(f"best-static: {len(tried)} layouts could serve the trace")
        for r in sorted(tried, key=lambda r: r.gpu_hours):
            print(
                f"  {r.policy:60s} {r.gpu_hours:9.2f} GPU-h  "
                f"p95 {r.p95_queue_delay_s:6.2f} s  dropped {r.dropped}"
            )
    if best is not None:
        runs[f"best-static ({best.policy})"] = best
    print(
        f"{'policy':45s} {'GPU-hours':>10s} {'slice-h':>9s} {'p95 s':>7s} {'dropped':>8s} {'cold':>7s} "
        f"{'recuts':>7s} {'wall s':>7s} {'req/s':>9s}"
    )
    for name, r in runs.items():
        rate = r.requests_simulated / r.wall_s if r.wall_s else 0.0
        print(
            f"{name:45s} {r.gpu_hours:10.2f} {r.slice_hours_billed:9.2f} {r.p95_queue_delay_s:7.2f} "
            f"{r.dropped:8d} {r.cold_starts:7d} {r.recuts:7d} {r.wall_s:7.1f} {rate:9.0f}"
        )
    dyn = runs["dynamic"]
    if best is not None:
        saving = 1 - dyn.gpu_hours / best.gpu_hours
        print(
            f"dynamic vs best static: {saving:+.1%} fewer GPU-hours (target >= {TARGET_SAVING:.0%}), "
            f"p95 {dyn.p95_queue_delay_s:.2f} s vs {best.p95_queue_delay_s:.2f} s"
        )
    else:
        print("dynamic vs best static: no static layout met the dynamic p95 (or the sweep was skipped)")
    print(f"dynamic vs whole cards: {1 - dyn.gpu_hours / runs['whole'].gpu_hours:+.1%} fewer GPU-hours")
    n, limit = TARGET_SPEED
    print(
        f"speed: dynamic ran {dyn.requests_simulated} requests in {dyn.wall_s:.1f} s "
        f"({dyn.requests_simulated / dyn.wall_s:.0f}/s); target: a day of >= {n} in <= {limit:.0f} s"
    )
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
