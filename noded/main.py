"""tide-noded: the entry point (the only place that reads the environment
and the command line)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import zlib
from pathlib import Path
from typing import Any

from noded._agent import AgentSettings, NodeAgent
from noded._client import CoordinatorClient
from noded._server import NodeServer
from noded.config import FileConfig, load_config, registry_auth
from noded.gateway import ensure_gateway
from tide.api.errors import InvalidArgument, TideError
from tide.daemon import serve_until_signalled

__all__ = ["main"]

log = logging.getLogger("tide.noded")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tide-noded",
        description="Tide's host agent: reports this host's GPUs, runs the workers the coordinator "
        "places here, and keeps them running.  SIGTERM stops the agent and leaves workers running; "
        "a restarted agent adopts them.",
        epilog="Example: tide-noded --config /etc/tide/noded.toml",
    )
    p.add_argument("--config", help="TOML config file (see noded/config.py for every key)")
    p.add_argument("--check-config", action="store_true", help="validate the config file and exit")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


def _gpus(cfg: FileConfig) -> Any:
    import noded.inventory as inventory

    if cfg.gpus.source == "simulated":
        # Seeded by hostname: stable across restarts (assignments name GPUs by UUID), distinct per host.
        seed = zlib.crc32(cfg.hostname().encode())
        return inventory.SimulatedGpus.from_spec(cfg.gpus.simulated, seed=seed)
    return inventory.NvmlGpus()


def _runtime(cfg: FileConfig) -> Any:
    from noded.runtime import CudaCheckpoint

    rt = cfg.runtime
    if rt.kind == "containerd":
        from noded.runtime import ContainerdConfig, ContainerdRuntime

        parent = rt.cgroup_parent or ("system.slice" if rt.systemd_cgroup else "/tide")
        # noded's own spec dir comes first: the operator's specs win for the names they have.
        own_cdi = Path(rt.state_dir) / "cdi"
        refresh = ["nvidia-ctk", "cdi", "generate", "--device-name-strategy=uuid", "--format=json"]
        refresh.append(f"--output={own_cdi / 'nvidia.json'}")
        if rt.cdi_refresh:
            own_cdi.mkdir(parents=True, exist_ok=True)
        config = ContainerdConfig(
            log_dir=str(Path(rt.state_dir) / "logs"),
            socket=rt.containerd_socket,
            cdi_dirs=[str(own_cdi), *rt.cdi_dirs] if rt.cdi_refresh else list(rt.cdi_dirs),
            cdi_refresh=refresh if rt.cdi_refresh else [],
            systemd_cgroup=rt.systemd_cgroup,
            cgroup_parent=parent,
            registries=registry_auth(rt.registries),
            fast_worker=rt.fast_worker,
        )
        return ContainerdRuntime(config, cuda_checkpoint=CudaCheckpoint.find(rt.cuda_checkpoint))
    from noded.runtime import ProcessRuntime

    workers = Path(rt.state_dir) / "workers"
    return ProcessRuntime(
        workers,
        prewarm=rt.prewarm,
        prewarm_modules=rt.prewarm_modules,
        cuda_checkpoint=CudaCheckpoint.find(rt.cuda_checkpoint),
        fast_worker=rt.fast_worker,
    )


def _flashboot(cfg: FileConfig) -> Any:
    """The keeper's config ([flashboot]); None when disabled."""
    fb = cfg.flashboot
    if not fb.enabled:
        return None
    from flashboot import KeeperConfig

    return KeeperConfig(
        state_dir=fb.state_dir or str(Path(cfg.runtime.state_dir) / "flashboot"),
        shm_dir=fb.shm_dir,
        ram_budget_bytes=int(fb.ram_budget_gb * 1e9),
        disk_budget_bytes=int(fb.disk_budget_gb * 1e9),
        direct_io=fb.direct_io,
    )


def _models(cfg: FileConfig) -> Any:
    """The host's model cache ([models]); None when disabled.  InvalidArgument on bad URLs."""
    m = cfg.models
    if not m.enabled:
        return None
    from tiered_storage import ModelCache, SourceSettings, TieredStore, open_object_store

    store = None
    if m.region_url:
        region = open_object_store(
            m.region_url, endpoint_url=m.region_endpoint_url, credentials_file=m.region_credentials_file
        )
        global_ = (
            open_object_store(
                m.global_url, endpoint_url=m.global_endpoint_url, credentials_file=m.global_credentials_file
            )
            if m.global_url
            else None
        )
        store = TieredStore(region, global_)
    sources = SourceSettings(
        s3_endpoint_url=m.source_endpoint_url,
        s3_credentials_file=m.source_credentials_file,
        hf_endpoint=m.hf_endpoint,
        hf_token_file=m.hf_token_file,
    )
    return ModelCache(
        m.cache_dir or Path(cfg.runtime.state_dir) / "models",
        budget_bytes=int(m.budget_gb * 1e9),
        store=store,
        sources=sources,
    )


def _join_key(cfg: FileConfig) -> str:
    try:
        return Path(cfg.coordinator.join_key_file).read_text().strip()
    except OSError as exc:
        raise InvalidArgument(f"cannot read coordinator.join-key-file: {exc}") from None


async def _serve(cfg: FileConfig, join_key: str) -> int:
    runtime = _runtime(cfg)
    replicas = cfg.coordinator.replicas()
    token_file = str(Path(cfg.runtime.state_dir) / "node-token")
    client = CoordinatorClient(replicas, join_key, token_file=token_file)
    if cfg.coordinator.gateway:  # before any worker starts (or is adopted) pointing at it
        await asyncio.to_thread(
            ensure_gateway, cfg.coordinator.gateway, replicas, Path(cfg.runtime.state_dir)
        )
    host, _, port = cfg.node.listen.rpartition(":")
    server = NodeServer(runtime, lambda: client.token, host=host, port=int(port))
    await server.start()
    settings = AgentSettings(
        hostname=cfg.hostname(),
        region=cfg.node.region,
        datacenter=cfg.node.datacenter,
        address=cfg.node.advertise or server.address,
        stop_grace_s=cfg.runtime.stop_grace_s,
        flashboot=_flashboot(cfg),
        models=_models(cfg),
        report_dir=str(Path(cfg.runtime.state_dir) / "reports"),
        bundle_dir=str(Path(cfg.runtime.state_dir) / "bundles"),
        worker_gateway=f"http://{cfg.coordinator.gateway}" if cfg.coordinator.gateway else "",
        suspend_budget_bytes=cfg.runtime.suspend_budget_mb << 20,
        suspend_settle_s=cfg.runtime.suspend_settle_s,
    )
    agent = NodeAgent(client, runtime, _gpus(cfg), settings)
    await agent.start()
    await serve_until_signalled(f"node {settings.hostname} serving")
    log.info("stopping the agent; workers keep running")
    await agent.stop()
    await server.stop()
    await runtime.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
        if args.check_config:
            print(f"{args.config or '(defaults)'}: OK")
            return 0
        try:
            import uvloop

            return uvloop.run(_serve(cfg, _join_key(cfg)))
        except ImportError:
            return asyncio.run(_serve(cfg, _join_key(cfg)))
    except TideError as exc:
        print(f"tide-noded: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
