"""``tide simulate`` and ``tide simulate gen-trace``: the command line (see docs/simulate.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from simulate._gen import fleet_toml, gen_trace
from simulate._inputs import EndpointsFile, load_endpoints, load_fleet, load_trace
from simulate._policy import parse_policy
from simulate._run import SimResult, SimSettings, best_static, simulate
from tide.api.errors import InvalidArgument

__all__ = ["main"]

_EPILOG = """\
examples:
  tide simulate gen-trace --out day.jsonl --requests 100000 --seed 1 --fleet-out fleet.toml --hosts 20
  tide simulate --trace day.jsonl --fleet fleet.toml --policy dynamic
  tide simulate --trace day.jsonl --fleet fleet.toml --policy static:all-balanced
  tide simulate --trace day.jsonl --fleet fleet.toml \
      --policy static:H100-80GB=all-1g.10gb,RTXPRO6000-96GB=all-2g.48gb
  tide simulate --trace day.jsonl --fleet fleet.toml --policy best-static --json | jq .best.gpu_hours

policies: dynamic (on-demand and ahead-of-time MIG re-cuts, as the leader runs them), whole (no
MIG: every card whole), static:<layout> (every MIG-pool card cut once into a named layout, per
card type or one name for all), best-static (every named layout; the cheapest that meets the
dynamic run's p95 queue delay).  Inputs and outputs: docs/simulate.md."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tide simulate",
        description="Replay a request trace through Tide's real scheduling planners on a virtual clock.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", metavar="FILE", required=True, help="JSONL, one request a line")
    p.add_argument("--fleet", metavar="FILE", required=True, help="TOML: hosts per region and data center")
    p.add_argument(
        "--endpoints", metavar="FILE", help="TOML: workersMin/Max, idleTimeout, scaler per endpoint"
    )
    p.add_argument("--policy", default="dynamic", help="dynamic | whole | static:<layout> | best-static")
    p.add_argument(
        "--warmup-days", type=int, default=2, help="days replayed before the measured one (default 2)"
    )
    p.add_argument(
        "--tick", type=float, default=1.0, metavar="S", help="the leader's pass interval (default 1 s)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def _gen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tide simulate gen-trace",
        description="Write a synthetic US/EU day (peaks 6 h apart, a night mix, bursts) as a trace.",
        epilog="example:\n  tide simulate gen-trace --out day.jsonl --requests 1000000 --seed 7 \\\n"
        "      --fleet-out fleet.toml --hosts 1000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bursts", type=int, default=6, help="ten-minute bursts per region (default 6)")
    p.add_argument("--fleet-out", metavar="FILE", help="also write a matching fleet file")
    p.add_argument("--hosts", type=int, default=20, help="hosts in that fleet, half US, half EU (default 20)")
    return p


def _gen(argv: list[str], out: TextIO) -> int:
    args = _gen_parser().parse_args(argv)
    n = gen_trace(args.out, requests=args.requests, seed=args.seed, bursts=args.bursts)
    print(f"wrote {n} requests to {args.out}", file=out)
    if args.fleet_out:
        Path(args.fleet_out).write_text(fleet_toml(args.hosts), encoding="utf-8")
        print(f"wrote a fleet of {args.hosts} hosts to {args.fleet_out}", file=out)
    return 0


def _table(r: SimResult, out: TextIO) -> None:
    print(
        f"{r.policy}: {r.gpu_hours:.2f} GPU-hours, {r.slice_hours_billed:.2f} slice-hours billed, "
        f"queue delay p50/p95/p99 {r.p50_queue_delay_s:.2f}/{r.p95_queue_delay_s:.2f}/"
        f"{r.p99_queue_delay_s:.2f} s, "
        f"{r.jobs} jobs, {r.dropped} dropped, {r.cold_starts} cold starts, {r.recuts} re-cuts "
        f"({r.requests_simulated} requests simulated in {r.wall_s:.1f} s)",
        file=out,
    )
    print("  hour  gpu_h  slice_h   p95_s   jobs  cold  recuts", file=out)
    for h in r.hours:
        print(
            f"  {h.hour:02d}   {h.gpu_hours:6.2f} {h.slice_hours_billed:7.2f} {h.p95_queue_delay_s:7.2f} "
            f"{h.jobs:6d} {h.cold_starts:5d} {h.recuts:6d}",
            file=out,
        )


def _run(args: argparse.Namespace, out: TextIO) -> int:
    fleet = load_fleet(args.fleet)
    trace = load_trace(args.trace, fleet)
    eps = load_endpoints(args.endpoints) if args.endpoints else EndpointsFile()
    settings = SimSettings(tick_s=args.tick, warmup_days=args.warmup_days)
    if args.policy != "best-static":
        policy = parse_policy(args.policy, fleet)
        result = simulate(
            trace, fleet, policy, endpoints=eps, endpoints_path=args.endpoints or "", settings=settings
        )
        if args.json:
            out.write(msgspec.json.encode(result).decode() + "\n")
        else:
            _table(result, out)
        return 0
    dynamic = simulate(trace, fleet, parse_policy("dynamic", fleet), endpoints=eps, settings=settings)
    best, runs = best_static(trace, fleet, dynamic.p95_queue_delay_s, endpoints=eps, settings=settings)
    body: dict[str, Any] = {
        "policy": "best-static",
        "target_p95_queue_delay_s": dynamic.p95_queue_delay_s,
        "best": best,
        "dynamic": dynamic,
        "candidates": [
            {
                "policy": r.policy,
                "gpu_hours": r.gpu_hours,
                "p95_queue_delay_s": r.p95_queue_delay_s,
                "dropped": r.dropped,
            }
            for r in runs
        ],
    }
    if args.json:
        out.write(msgspec.json.encode(body).decode() + "\n")
        return 0
    for c in sorted(body["candidates"], key=lambda c: c["gpu_hours"]):
        print(
            f"  {c['policy']}: {c['gpu_hours']:.2f} GPU-hours, "
            f"p95 {c['p95_queue_delay_s']:.2f} s, {c['dropped']} dropped",
            file=out,
        )
    if best is None:
        print(
            f"no static layout serves the trace at p95 <= {dynamic.p95_queue_delay_s:.2f} s (dynamic's)",
            file=out,
        )
    else:
        _table(best, out)
    return 0


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Exit codes: 0 done, 1 bad input (the message names the file and line), 2 bad flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    try:
        if argv[:1] == ["gen-trace"]:
            return _gen(argv[1:], out)
        return _run(_parser().parse_args(argv), out)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    except InvalidArgument as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
