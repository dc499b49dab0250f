"""tide-coordinator: the entry point (the only place that reads the
environment and the command line)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from coordinator.config import load_config, to_settings, to_store
from coordinator.server import Coordinator
from tide.api.errors import TideError
from tide.daemon import serve_until_signalled

__all__ = ["main"]

log = logging.getLogger("tide.coordinator")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tide-coordinator",
        description="Tide's control plane: the RunPod-compatible public and worker APIs, the admin "
        "and node APIs, and (on the elected leader) the autoscaler, placer and reaper.",
        epilog="Example: tide-coordinator --config /etc/tide/coordinator.toml",
    )
    p.add_argument("--config", help="TOML config file (see coordinator/config.py for every key)")
    p.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    p.add_argument("--listen", help="override server.listen (host:port)")
    p.add_argument("--store", help="override store.url (etcd://host:port, etcds://host:port or memory://)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    settings = to_settings(cfg)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        settings.host, settings.port = host, int(port)
    store = to_store(cfg, url=args.store or "")
    coordinator = Coordinator(store, settings)
    await coordinator.start()
    # Long-lived objects made at startup never need scanning again, and the job
    # path makes little cyclic garbage: default thresholds cost ~10% of CPU and
    # ~20 ms gen-2 pauses (bench/jobs.py with py-spy).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    log.info("ready on %s", coordinator.url)
    await serve_until_signalled(f"serving on {coordinator.url}")
    log.info("stopping")
    await coordinator.stop()
    await store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.check_config:
        try:
            cfg = load_config(args.config)
            to_settings(cfg)
            to_store(cfg, url=args.store or "")
        except TideError as exc:
            print(f"config error: {exc.message}", file=sys.stderr)
            return 2
        print(f"{args.config or '(defaults)'}: OK")
        return 0
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))
    except TideError as exc:
        print(f"tide-coordinator: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
