"""``DevCluster``: the coordinator and N node agents wired together in one event loop."""

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
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the daemons are imported where used, so `tide dev --help` loads neither
    from coordinator.server import Coordinator
    from coordinator.store import Store
    from flashboot import KeeperConfig
    from noded import NodeAgent, NodeServer
    from noded.inventory import SimulatedGpus
    from noded.runtime import ContainerdRuntime, ContainerRuntime
    from tiered_storage import ObjectStore

__all__ = ["PREWARM", "SUSPEND_BUDGET_MB", "DevCluster", "prewarm_modules"]

log = logging.getLogger("tide.dev")

PREWARM = True  # --prewarm's default: cold starts ~2 s -> ~0.25 s (bench/scale.py --prewarm both)
# --suspend-budget-mb's default: host RAM a dev node lets suspended workers hold (issue 16), so that a
# dev cluster's scale-from-zero is a thaw of the idle worker, as on a production host configured for it.
SUSPEND_BUDGET_MB = 4096


def prewarm_modules() -> tuple[str, ...]:
    """What tide dev's prewarm pool imports: runpod's dependencies, plus torch and safetensors when
    installed.  Most GPU handlers import them, and ``import torch`` (~3 s here) then happens once,
    in the pool, instead of in every cold start (bench/coldstart.py)."""
    from noded.runtime import DEFAULT_PREWARM_MODULES

    extra = tuple(m for m in ("torch", "safetensors.torch") if importlib.util.find_spec(m.partition(".")[0]))
    return (*DEFAULT_PREWARM_MODULES, *extra)


def _simulated_gpus(spec: str, node: str, seed: int) -> SimulatedGpus:
    from noded.inventory import SimulatedGpus

    return SimulatedGpus.from_spec(spec, seed=seed)


class DevCluster:
    """The cluster ``tide dev`` runs; tests and the demo use it directly too."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.api_key = args.api_key or "tk_dev_" + secrets.token_urlsafe(16)
        self.state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="tide-dev-"))
        self.url = ""
        self._store: Store | None = None
        self._coordinator: Coordinator | None = None
        self._agents: list[NodeAgent] = []
        self._servers: list[NodeServer] = []

    async def start(self) -> None:
        from coordinator import ensure_token_secret
        from coordinator.jobs import JobSettings, WebhookPolicy
        from coordinator.server import Coordinator, CoordinatorSettings
        from coordinator.store import open_store

        self._store = open_store(self.args.etcd or "memory://")
        sock = socket.create_server((self.args.host, self.args.port), reuse_port=False)
        host, port = sock.getsockname()[:2]
        settings = CoordinatorSettings(
            state_dir=str(self.state_dir / "coordinator"),
            admin_key_hashes=[hashlib.sha256(self.api_key.encode()).hexdigest()],
            jobs=JobSettings(
                claim_grace_s=self.args.claim_grace,
                ping_interval_s=5.0,
                # a development cluster: webhooks to local receivers are the usual case
                webhooks=WebhookPolicy(allow_cidrs=("127.0.0.0/8", "::1/128"), allow_hosts=("localhost",)),
            ),
            sock=sock,
            public_url=f"http://{host}:{port}",
            node_lost_after_s=self.args.lost_after,
            mig_recut_interval_s=getattr(self.args, "mig_recut_interval", 30.0),
            prices={"H100-80GB": 2.49, "RTXPRO6000-96GB": 1.89, "A100-80GB": 1.64},
            token_secret=ensure_token_secret(self.state_dir / "coordinator" / "token-secret"),
            objects=self._objects(),
        )
        self._coordinator = Coordinator(self._store, settings)
        await self._coordinator.start()
        self.url = settings.public_url
        for i in range(self.args.nodes):
            await self.add_node(f"node-{i + 1}", i)

    def _objects(self) -> ObjectStore | None:
        """``--storage s3``: the S3 server the flags name; local (None): the state dir's."""
        from tiered_storage import open_object_store

        if getattr(self.args, "storage", "local") != "s3":
            return None
        if not self.args.s3_url:
            raise SystemExit("tide dev --storage s3 needs --s3-url s3://bucket[/prefix] (and --s3-endpoint)")
        return open_object_store(
            self.args.s3_url,
            endpoint_url=self.args.s3_endpoint,
            credentials_file=self.args.s3_credentials_file,
        )

    async def add_node(self, name: str, seed: int) -> NodeAgent:
        from noded import AgentSettings, CoordinatorClient, NodeAgent, NodeServer

        runtime = self._runtime(name)
        token_file = str(self.state_dir / "nodes" / name / "node-token")
        client = CoordinatorClient(self.url, self.api_key, token_file=token_file)
        server = NodeServer(runtime, lambda: client.token)
        await server.start()
        settings = AgentSettings(
            hostname=name,
            region="DEV",
            datacenter="DEV-1",
            address=server.address,
            flashboot=self.flashboot_config(name),
            report_dir=str(self.state_dir / "nodes" / name / "reports"),
            bundle_dir=str(self.state_dir / "nodes" / name / "bundles"),
            t1_advice_level=logging.INFO,  # a laptop's /dev/shm is fine for trying things out
            suspend_budget_bytes=max(0, getattr(self.args, "suspend_budget_mb", SUSPEND_BUDGET_MB)) << 20,
        )
        agent = NodeAgent(client, runtime, _simulated_gpus(self.args.gpus, name, seed), settings)
        await agent.start()
        self._agents.append(agent)
        self._servers.append(server)
        prewarmed = getattr(runtime, "prewarmed", None)
        if prewarmed is not None:  # "ready" means the first cold start is already fast
            await prewarmed(timeout=15.0)
        return agent

    def flashboot_config(self, name: str) -> KeeperConfig | None:
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

    def _runtime(self, name: str) -> ContainerRuntime:
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


async def _stop_worker(runtime: ContainerRuntime, worker_id: str) -> None:
    with contextlib.suppress(Exception):  # best effort at shutdown; the rest still stop
        await runtime.stop(worker_id, grace=5.0)
        await runtime.delete(worker_id)


def _containerd_runtime(args: argparse.Namespace, root: Path, *, owner: str) -> ContainerdRuntime:
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
