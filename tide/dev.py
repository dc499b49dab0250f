"""``tide dev``: a whole Tide cluster in one process, for laptops, demos and tests.

It runs the coordinator (in-process store, or ``--etcd``) and N node agents
with simulated GPUs and the process runtime (or real containers with
``--runtime containerd``): the same code paths as production, wired together
in one event loop (the only place where both daemons meet).  Ctrl-C stops the
agents and the coordinator, then the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DevCluster", "main"]

log = logging.getLogger("tide.dev")

PREWARM = True  # --prewarm's default: cold starts ~2 s -> ~0.25 s (bench/scale.py --prewarm both)


def prewarm_modules() -> tuple[str, ...]:
    """What tide dev's prewarm pool imports: runpod's dependencies, plus torch and safetensors when
    installed.  Most GPU handlers import them, and ``import torch`` (~3 s here) then happens once,
    in the pool, instead of in every cold start (bench/coldstart.py)."""
    from noded.runtime._pool import DEFAULT_PREWARM_MODULES

    extra = tuple(m for m in ("torch", "safetensors.torch") if importlib.util.find_spec(m.partition(".")[0]))
    return (*DEFAULT_PREWARM_MODULES, *extra)


_EPILOG = """examples:
  tide dev                                   # coordinator on :8420, one node with simulated GPUs
  tide dev --nodes 2 --gpus 2xH100-80GB,1xRTXPRO6000-96GB --api-key secret
  tide dev --etcd etcd://127.0.0.1:2379     # keep state in a real etcd
  tide dev --gpus 1xH100-80GB:mig,1xRTXPRO6000-96GB:mig,1xH100-80GB   # MIG pool: cut on demand
  sudo tide dev --runtime containerd --insecure-registry registry.lan:5000   # workers as containers

then, in another shell:
  export TIDE_URL=http://127.0.0.1:8420 TIDE_API_KEY=<the printed key>
  tide endpoint create echo --image dir://$PWD/examples/echo
  curl -H "Authorization: Bearer $TIDE_API_KEY" -d '{"input":{"hi":1}}' $TIDE_URL/v2/echo/runsync
"""


def _parser() -> argparse.ArgumentParser:
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
    p.add_argument(
        "--claim-grace", type=float, default=30.0, help="seconds before a silent worker's job is requeued"
    )
    p.add_argument(
        "--lost-after", type=float, default=15.0, help="seconds without heartbeat before a node is lost"
    )
    f = p.add_argument_group("FlashBoot (weights kept on each node after their workers exit)")
    f.add_argument("--no-flashboot", action="store_true", help="run the nodes without a FlashBoot keeper")
    f.add_argument("--flashboot-ram-gb", type=float, default=4.0, help="T1 budget per node (default 4)")
    f.add_argument("--flashboot-disk-gb", type=float, default=16.0, help="T2 budget per node (default 16)")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default WARNING)")
    return p


def _simulated_gpus(spec: str, node: str, seed: int) -> Any:
    from noded.inventory import SimulatedGpus

    return SimulatedGpus.from_spec(spec, seed=seed)


class DevCluster:
    """The cluster ``tide dev`` runs; tests and the demo use it directly too."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api_key = args.api_key or "tk_dev_" + secrets.token_urlsafe(16)
        self.state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="tide-dev-"))
        self.url = ""
        self._store: Any = None
        self._coordinator: Any = None
        self._agents: list[Any] = []
        self._servers: list[Any] = []

    async def start(self) -> None:
        from coordinator._app import Coordinator, CoordinatorSettings
        from coordinator.jobs import JobSettings
        from coordinator.store import open_store

        self._store = open_store(self.args.etcd or "memory://")
        sock = socket.create_server((self.args.host, self.args.port), reuse_port=False)
        host, port = sock.getsockname()[:2]
        settings = CoordinatorSettings(
            state_dir=str(self.state_dir / "coordinator"),
            admin_key_hashes=[hashlib.sha256(self.api_key.encode()).hexdigest()],
            jobs=JobSettings(claim_grace_s=self.args.claim_grace, ping_interval_s=5.0),
            sock=sock,
            public_url=f"http://{host}:{port}",
            node_lost_after_s=self.args.lost_after,
            mig_recut_interval_s=getattr(self.args, "mig_recut_interval", 30.0),
            prices={"H100-80GB": 2.49, "RTXPRO6000-96GB": 1.89, "A100-80GB": 1.64},
        )
        self._coordinator = Coordinator(self._store, settings)
        await self._coordinator.start()
        self.url = settings.public_url
        for i in range(self.args.nodes):
            await self.add_node(f"node-{i + 1}", i)

    async def add_node(self, name: str, seed: int) -> Any:
        from noded import AgentSettings, CoordinatorClient, NodeAgent, NodeServer

        runtime = self._runtime(name)
        client = CoordinatorClient(self.url, self.api_key)
        server = NodeServer(runtime, lambda: client.token)
        await server.start()
        settings = AgentSettings(
            hostname=name,
            region="DEV",
            datacenter="DEV-1",
            address=server.address,
            flashboot=self.flashboot_config(name),
            report_dir=str(self.state_dir / "nodes" / name / "reports"),
            t1_advice_level=logging.INFO,  # a laptop's /dev/shm is fine for trying things out
        )
        agent = NodeAgent(client, runtime, _simulated_gpus(self.args.gpus, name, seed), settings)
        await agent.start()
        self._agents.append(agent)
        self._servers.append(server)
        prewarmed = getattr(runtime, "prewarmed", None)
        if prewarmed is not None:  # "ready" means the first cold start is already fast
            await prewarmed(timeout=15.0)
        return agent

    def flashboot_config(self, name: str) -> Any:
        """A node's keeper: T2 under the state dir, T1 in /dev/shm under a name unique to this
        state dir (several dev clusters may run on one machine).  None with --no-flashboot."""
        if getattr(self.args, "no_flashboot", False):
            return None
        from flashboot import KeeperConfig

        tag = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return KeeperConfig(
            state_dir=str(self.state_dir / "nodes" / name / "flashboot"),
            shm_dir=f"/dev/shm/tide-dev-{tag}-{name}",
            ram_budget_bytes=int(getattr(self.args, "flashboot_ram_gb", 4.0) * 1e9),
            disk_budget_bytes=int(getattr(self.args, "flashboot_disk_gb", 16.0) * 1e9),
        )

    def _runtime(self, name: str) -> Any:
        root = self.state_dir / "nodes" / name
        if self.args.runtime == "containerd":
            return _containerd_runtime(self.args, root, owner=f"tide-dev-{name}")
        from noded.runtime import ProcessRuntime

        prewarm = getattr(self.args, "prewarm", PREWARM)
        return ProcessRuntime(root / "workers", prewarm=prewarm, prewarm_modules=prewarm_modules())

    async def stop(self, *, stop_workers: bool = True) -> None:
        for agent in self._agents:
            await agent.stop()
        if stop_workers:  # all at once: one slow worker must not hold up the others' stops
            stops = [_stop_worker(a.runtime, s.id) for a in self._agents for s in await a.runtime.list()]
            await asyncio.gather(*stops)
        for server in self._servers:
            await server.stop()
        for agent in self._agents:
            await agent.runtime.close()  # workers keep running; this closes connections only
        for agent in self._agents:  # T1: give the RAM back once no worker can map it
            if agent.flashboot is not None:
                shm = agent.flashboot.keeper.config.shm_dir
                if stop_workers:
                    shutil.rmtree(shm, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.rmdir(shm)  # only if empty: workers left running may still use it
        if self._coordinator is not None:
            await self._coordinator.stop()
        if self._store is not None:
            await self._store.close()


async def _stop_worker(runtime: Any, worker_id: str) -> None:
    with contextlib.suppress(Exception):  # best effort at shutdown; the rest still stop
        await runtime.stop(worker_id, grace=5.0)
        await runtime.delete(worker_id)


def _containerd_runtime(args: argparse.Namespace, root: Path, *, owner: str) -> Any:
    """A ContainerdRuntime for one dev node: its own owner label and log dir, simulated GPUs."""
    import msgspec

    from noded.config import load_registries, registry_auth
    from noded.runtime import ContainerdConfig, ContainerdRuntime, Mount, RegistryAuth

    registries = registry_auth(load_registries(args.registry_config)) if args.registry_config else {}
    for host in args.insecure_registry:
        registries[host] = msgspec.structs.replace(registries.get(host, RegistryAuth()), insecure=True)
    binds = []
    for bind in args.containerd_bind:
        src, _, dst = bind.partition(":")
        binds.append(Mount(source=os.path.abspath(src), target=dst or os.path.abspath(src), read_only=True))
    config = ContainerdConfig(
        log_dir=str(root / "logs"),
        socket=args.containerd_socket,
        owner=owner,
        registries=registries,
        binds=binds,
        cdi_dirs=[os.path.abspath(d) for d in args.cdi_dir],
        simulated_gpus=True,
    )
    return ContainerdRuntime(config)


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
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except ImportError:
        return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
