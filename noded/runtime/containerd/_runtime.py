"""ContainerdRuntime: workers as containerd containers, over containerd's gRPC API (grpc.aio).

One worker = one container (id = worker id) in namespace ``tide`` with its own
snapshot (key = worker id) on the image's unpacked layers, and one task.  The
container carries the labels of the spec plus ``tide.owner`` (which runtime owns
it: ``list`` filters on it) and ``tide.started-at``; the WorkerSpec itself is
stored as a container extension, so ``create`` can tell "same spec" from
"different spec" and a restarted noded gets everything back from containerd
(nothing is kept on noded's disk but logs).  Tasks are left in place after they
exit (their exit status lives there) until ``delete``.

Shims are containerd's children, not noded's, so workers survive noded.
Logs: the shim appends stdout and stderr to ``<log_dir>/<id>.log`` (both must
be set: shim 1.6.20 crashes on stdout alone); noded serves that file.
See _oci_spec.py for the container's isolation choices and _pull.py for pulls.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import json
import logging
import os
import time
from typing import Any, Literal, final

import aiohttp
import grpc
import msgspec

from noded.runtime._common import check_worker_id, tail_lines, vm_rss
from noded.runtime._cuda_checkpoint import CudaCheckpoint
from noded.runtime._protocol import Mount, WorkerSpec, WorkerStatus
from noded.runtime.containerd._cdi import DEFAULT_CDI_DIRS, ContainerEdits, device_edits, resolve_device_nodes
from noded.runtime.containerd._client import Ctrd, rpc
from noded.runtime.containerd._oci_spec import plan_oci_spec
from noded.runtime.containerd._pull import PulledImage, ensure_image
from noded.runtime.containerd._registry import RegistryAuth, RegistryClient, parse_reference
from tide.api.errors import AlreadyExists, FailedPrecondition, NotFound

__all__ = ["ContainerdConfig", "ContainerdRuntime"]

log = logging.getLogger(__name__)

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
WORKER_SPEC_EXT = "tide.worker-spec"
OWNER_LABEL = "tide.owner"
STARTED_LABEL = "tide.started-at"
EXIT_CODE_LOST = 255  # a started worker whose task vanished (host reboot, containerd state wiped)
_CREATE_LEASE = datetime.timedelta(minutes=10)


class ContainerdConfig(msgspec.Struct, frozen=True, kw_only=True):
    log_dir: str  # where worker logs are written (noded serves them)
    socket: str = "/run/containerd/containerd.sock"
    namespace: str = "tide"
    owner: str = "noded"  # value of the tide.owner label; list() returns only these
    snapshotter: str = "overlayfs"
    runtime: str = "io.containerd.runc.v2"
    runc_root: str = ""  # runc's state dir; "" = the shim's default
    # cgroupfs: each worker's cgroup is <cgroup_parent>/<id>.  systemd: the worker is the
    # transient scope "tide-<id>.scope" in the slice <cgroup_parent> (e.g. "tide.slice").
    systemd_cgroup: bool = False
    cgroup_parent: str = "/tide"
    network: Literal["host", "none"] = "host"
    cdi_dirs: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_CDI_DIRS))
    # Rewrites a spec into one of cdi_dirs when a worker's device is in none (a MIG instance
    # created since the last generation); noded: nvidia-ctk cdi generate --device-name-strategy=uuid.
    cdi_refresh: list[str] = []
    registries: dict[str, RegistryAuth] = {}  # by registry host ("127.0.0.1:5000", "ghcr.io")
    shm_bytes: int = 1 << 30
    # Host paths bound into every worker, after the spec's own mounts are planned (e.g. in
    # tide dev, the host's Python for images that carry none).  Not part of the stored spec.
    binds: list[Mount] = []
    # tide dev: the GPUs are simulated, so devices no CDI spec names get only the visibility
    # env and no device nodes.  Never set on a real GPU host: there a missing spec is an error.
    simulated_gpus: bool = False
    # Issue 17: bind the fast worker's directory read-only into workers and lead PYTHONPATH with it,
    # so runpod 1.12.0 workers wait on events, not timers (an endpoint's TIDE_FAST_WORKER=0 opts out).
    fast_worker: bool = True


# containerd's task Status: CREATED=1 RUNNING=2 STOPPED=3 PAUSED=4 PAUSING=5 (Tasks.Pause: runc's freezer).
_TASK_STATES: dict[int, Literal["created", "running", "suspended", "exited"]] = {
    1: "created",
    2: "running",
    3: "exited",
    4: "suspended",
    5: "suspended",
}


@final
class ContainerdRuntime:
    """See the module docstring; the contract is ContainerRuntime's."""

    name = "containerd"

    def __init__(self, config: ContainerdConfig, *, cuda_checkpoint: CudaCheckpoint | None = None) -> None:
        self.config = config
        self._cuda = cuda_checkpoint or CudaCheckpoint.find()
        self._ctrd: Ctrd | None = None
        self._channel: grpc.aio.Channel | None = None
        self._http: aiohttp.ClientSession | None = None
        self._registry: RegistryClient | None = None
        self._connect_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _client(self) -> Ctrd:
        async with self._connect_lock:
            if self._ctrd is None:
                self._channel = grpc.aio.insecure_channel(f"unix://{self.config.socket}")
                ctrd = Ctrd(self._channel, self.config.namespace)
                await ctrd.ensure_namespace()
                self._ctrd = ctrd
            return self._ctrd

    def _registry_client(self) -> RegistryClient:
        if self._registry is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=300))
            self._registry = RegistryClient(self._http, self.config.registries)
        return self._registry

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _log_path(self, worker_id: str) -> str:
        return os.path.join(self.config.log_dir, f"{worker_id}.log")

    # -- create -----------------------------------------------------------------

    async def create(self, spec: WorkerSpec) -> None:
        check_worker_id(spec.id)
        parse_reference(spec.image)
        ctrd = await self._client()
        async with self._lock(spec.id):
            try:
                existing = await self._container(ctrd, spec.id)
            except NotFound:
                pass
            else:
                if _stored_spec(existing) != spec:
                    raise AlreadyExists(f"worker {spec.id} already exists with a different spec")
                return
            async with self._lock(f"image:{spec.image}"):
                image = await ensure_image(
                    ctrd, self._registry_client(), spec.image, snapshotter=self.config.snapshotter
                )
            oci = await asyncio.to_thread(self._oci_spec, spec, image)
            await self._create_container(ctrd, spec, image, oci)

    def _oci_spec(self, spec: WorkerSpec, image: PulledImage) -> dict[str, Any]:
        """Reads CDI specs and stats device nodes and host files: run it in a thread."""
        cfg = self.config
        edits = ContainerEdits()
        if spec.devices:
            edits = device_edits(
                spec.devices, cfg.cdi_dirs, refresh=cfg.cdi_refresh, simulated=cfg.simulated_gpus
            )
        if cfg.binds:
            spec = msgspec.structs.replace(spec, mounts=[*spec.mounts, *cfg.binds])
        return plan_oci_spec(
            spec,
            image.config,
            edits=edits,
            devices=resolve_device_nodes(edits.device_nodes),
            cgroups_path=cgroups_path(cfg, spec.id),
            network=cfg.network,
            host_files=[p for p in ("/etc/hosts", "/etc/resolv.conf") if os.path.isfile(p)],
            shm_bytes=cfg.shm_bytes,
            fast_worker=cfg.fast_worker,
        )

    async def _create_container(
        self, ctrd: Ctrd, spec: WorkerSpec, image: PulledImage, oci: dict[str, Any]
    ) -> None:
        pb, cfg = ctrd.pb, self.config
        options = None
        if cfg.runc_root or cfg.systemd_cgroup:
            opts = pb.runc.Options(root=cfg.runc_root, systemd_cgroup=cfg.systemd_cgroup)
            options = pb.any.Any(type_url="containerd.runc.v1.Options", value=opts.SerializeToString())
        container = pb.containers.Container(
            id=spec.id,
            labels={**spec.labels, OWNER_LABEL: cfg.owner},
            image=image.name,
            runtime=pb.containers.Container.Runtime(name=cfg.runtime, options=options),
            spec=pb.any.Any(type_url=SPEC_TYPE_URL, value=json.dumps(oci).encode()),
            snapshotter=cfg.snapshotter,
            snapshot_key=spec.id,
            extensions={
                WORKER_SPEC_EXT: pb.any.Any(type_url="tide/WorkerSpec", value=msgspec.json.encode(spec))
            },
        )
        async with ctrd.lease(expire=_CREATE_LEASE) as md:
            prepare = pb.snapshots.PrepareSnapshotRequest(
                snapshotter=cfg.snapshotter, key=spec.id, parent=image.chain_id
            )
            with contextlib.suppress(AlreadyExists):  # left by a create that failed after this step
                async with rpc(f"worker {spec.id}: prepare rootfs"):
                    await ctrd.snapshots.Prepare(prepare, metadata=md)
            async with rpc(f"worker {spec.id}: create container"):
                await ctrd.containers.Create(
                    pb.containers.CreateContainerRequest(container=container), metadata=md
                )

    # -- lifecycle --------------------------------------------------------------

    async def start(self, worker_id: str) -> WorkerStatus:
        ctrd = await self._client()
        async with self._lock(worker_id):
            status = await self.status(worker_id)
            if status.state == "running":
                return status
            if status.state == "exited":
                raise FailedPrecondition(f"worker {worker_id} has exited; delete it and create it again")
            await self._start_task(ctrd, worker_id)
            return await self.status(worker_id)

    async def _start_task(self, ctrd: Ctrd, worker_id: str) -> None:
        pb = ctrd.pb
        container = await self._container(ctrd, worker_id)
        with contextlib.suppress(NotFound):  # a task left CREATED by an earlier failed start
            async with rpc("delete stale task"):
                await ctrd.tasks.Delete(pb.tasks.DeleteTaskRequest(container_id=worker_id), metadata=ctrd.md)
        mounts_req = pb.snapshots.MountsRequest(snapshotter=container.snapshotter, key=container.snapshot_key)
        async with rpc(f"worker {worker_id}: rootfs mounts"):
            mounts = (await ctrd.snapshots.Mounts(mounts_req, metadata=ctrd.md)).mounts
        await asyncio.to_thread(os.makedirs, self.config.log_dir, exist_ok=True)
        uri = f"file://{self._log_path(worker_id)}"
        create = pb.tasks.CreateTaskRequest(container_id=worker_id, rootfs=mounts, stdout=uri, stderr=uri)
        async with rpc(f"worker {worker_id}: create task"):
            await ctrd.tasks.Create(create, metadata=ctrd.md)
        try:
            async with rpc(f"worker {worker_id}: start task"):
                await ctrd.tasks.Start(pb.tasks.StartRequest(container_id=worker_id), metadata=ctrd.md)
        except FailedPrecondition:
            with contextlib.suppress(NotFound):
                async with rpc("delete failed task"):
                    await ctrd.tasks.Delete(
                        pb.tasks.DeleteTaskRequest(container_id=worker_id), metadata=ctrd.md
                    )
            raise
        container.labels[STARTED_LABEL] = repr(time.time())
        update = pb.containers.UpdateContainerRequest(
            container=container, update_mask=pb.field_mask.FieldMask(paths=[f"labels.{STARTED_LABEL}"])
        )
        async with rpc(f"worker {worker_id}: record start"):
            await ctrd.containers.Update(update, metadata=ctrd.md)

    async def suspend(self, worker_id: str) -> WorkerStatus:
        """Tasks.Pause (runc freezes the container's cgroup), device memory to host RAM first."""
        async with self._lock(f"worker:{worker_id}"):
            status = await self.status(worker_id)
            if status.state != "running":
                if status.state == "suspended":
                    return status
                raise FailedPrecondition(f"worker {worker_id} is {status.state}, not running")
            ctrd = await self._client()
            spec = _stored_spec(await self._container(ctrd, worker_id))
            gpu = spec is not None and bool(spec.devices) and await self._cuda.checkpoint(status.pid)
            marker = _suspend_marker(self.config, worker_id)
            await asyncio.to_thread(_write_marker, marker, gpu)
            try:
                async with rpc(f"worker {worker_id}: pause"):
                    await ctrd.tasks.Pause(
                        ctrd.pb.tasks.PauseTaskRequest(container_id=worker_id), metadata=ctrd.md
                    )
            except Exception:
                if gpu:
                    await self._cuda.restore(status.pid)
                raise
            return await self.status(worker_id)

    async def resume(self, worker_id: str) -> WorkerStatus:
        """Tasks.Resume, then the device memory back; FailedPrecondition if it cannot run on."""
        async with self._lock(f"worker:{worker_id}"):
            status = await self.status(worker_id)
            if status.state != "suspended":
                if status.state == "running":
                    return status
                raise FailedPrecondition(f"worker {worker_id} is {status.state}, not suspended")
            ctrd = await self._client()
            async with rpc(f"worker {worker_id}: resume"):
                await ctrd.tasks.Resume(
                    ctrd.pb.tasks.ResumeTaskRequest(container_id=worker_id), metadata=ctrd.md
                )
            marker = _suspend_marker(self.config, worker_id)
            gpu = await asyncio.to_thread(_take_marker, marker)
            restore_s = 0.0
            if gpu:
                t0 = time.monotonic()
                why = await self._cuda.restore(status.pid)
                if why:
                    raise FailedPrecondition(f"worker {worker_id}: {why}; stop it and start a fresh one")
                restore_s = time.monotonic() - t0
            return msgspec.structs.replace(await self.status(worker_id), restore_s=restore_s)

    async def stop(self, worker_id: str, *, grace: float = 10.0) -> WorkerStatus:
        status = await self.status(worker_id)
        if status.state == "suspended":  # thawed so that SIGTERM reaches its handler
            ctrd = await self._client()
            with contextlib.suppress(NotFound, FailedPrecondition):
                async with rpc(f"worker {worker_id}: resume"):
                    await ctrd.tasks.Resume(
                        ctrd.pb.tasks.ResumeTaskRequest(container_id=worker_id), metadata=ctrd.md
                    )
            await asyncio.to_thread(_take_marker, _suspend_marker(self.config, worker_id))
            status = await self.status(worker_id)
        if status.state != "running":
            return status
        await self._kill(worker_id, 15)
        try:
            async with asyncio.timeout(grace):
                return await self.wait(worker_id)
        except TimeoutError:
            pass
        # PID 1 ignores SIGTERM without a handler: escalate.
        await self._kill(worker_id, 9)
        return await self.wait(worker_id)

    async def kill(self, worker_id: str, signal: int) -> None:
        status = await self.status(worker_id)
        if status.state != "running":
            raise FailedPrecondition(f"worker {worker_id} is {status.state}, not running")
        await self._kill(worker_id, signal)

    async def _kill(self, worker_id: str, signum: int) -> None:
        ctrd = await self._client()
        # all=True: every process of the container, as the process runtime signals the group.
        req = ctrd.pb.tasks.KillRequest(container_id=worker_id, signal=signum, all=True)
        with contextlib.suppress(NotFound, FailedPrecondition):  # it exited meanwhile
            async with rpc(f"worker {worker_id}: kill {signum}"):
                await ctrd.tasks.Kill(req, metadata=ctrd.md)

    async def wait(self, worker_id: str) -> WorkerStatus:
        ctrd = await self._client()
        while True:
            status = await self.status(worker_id)
            if status.state == "exited":
                return status
            if status.state == "created":
                raise FailedPrecondition(f"worker {worker_id} has not been started")
            with contextlib.suppress(NotFound):
                async with rpc(f"worker {worker_id}: wait"):
                    await ctrd.tasks.Wait(ctrd.pb.tasks.WaitRequest(container_id=worker_id), metadata=ctrd.md)

    async def delete(self, worker_id: str) -> None:
        check_worker_id(worker_id)
        ctrd = await self._client()
        pb = ctrd.pb
        async with self._lock(worker_id):
            try:
                status = await self.status(worker_id)
            except NotFound:
                return
            if status.state in ("running", "suspended"):
                raise FailedPrecondition(f"worker {worker_id} is {status.state}; stop it first")
            steps: list[tuple[str, Any, Any]] = [
                ("delete task", ctrd.tasks.Delete, pb.tasks.DeleteTaskRequest(container_id=worker_id)),
                (
                    "delete container",
                    ctrd.containers.Delete,
                    pb.containers.DeleteContainerRequest(id=worker_id),
                ),
                (
                    "remove rootfs",
                    ctrd.snapshots.Remove,
                    pb.snapshots.RemoveSnapshotRequest(snapshotter=self.config.snapshotter, key=worker_id),
                ),
            ]
            for what, call, req in steps:
                with contextlib.suppress(NotFound):
                    async with rpc(f"worker {worker_id}: {what}"):
                        await call(req, metadata=ctrd.md)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, self._log_path(worker_id))
        self._locks.pop(worker_id, None)

    # -- reads ------------------------------------------------------------------

    async def _container(self, ctrd: Ctrd, worker_id: str) -> Any:
        req = ctrd.pb.containers.GetContainerRequest(id=worker_id)
        try:
            async with rpc(f"worker {worker_id}"):
                container = (await ctrd.containers.Get(req, metadata=ctrd.md)).container
        except NotFound as e:
            raise NotFound(f"worker {worker_id} does not exist on this host") from e
        if container.labels.get(OWNER_LABEL) != self.config.owner:
            raise NotFound(f"worker {worker_id} does not exist on this host (owned by another runtime)")
        return container

    async def status(self, worker_id: str) -> WorkerStatus:
        check_worker_id(worker_id)
        ctrd = await self._client()
        container = await self._container(ctrd, worker_id)
        try:
            async with rpc(f"worker {worker_id}: task"):
                task = (
                    await ctrd.tasks.Get(ctrd.pb.tasks.GetRequest(container_id=worker_id), metadata=ctrd.md)
                ).process
        except NotFound:
            task = None
        return _status(container, task)

    async def list(self) -> builtins.list[WorkerStatus]:
        ctrd = await self._client()
        pb = ctrd.pb
        owned = f'labels."{OWNER_LABEL}"=={self.config.owner}'
        async with rpc("list containers"):
            containers = (
                await ctrd.containers.List(
                    pb.containers.ListContainersRequest(filters=[owned]), metadata=ctrd.md
                )
            ).containers
        async with rpc("list tasks"):
            tasks = {
                t.id: t for t in (await ctrd.tasks.List(pb.tasks.ListTasksRequest(), metadata=ctrd.md)).tasks
            }
        return [_status(c, tasks.get(c.id)) for c in sorted(containers, key=lambda c: c.id)]

    async def logs(self, worker_id: str, *, tail: int = 100) -> builtins.list[str]:
        await self.status(worker_id)
        return await asyncio.to_thread(tail_lines, self._log_path(worker_id), tail)

    async def close(self) -> None:
        """Close our connections; containers and their shims keep running."""
        if self._http is not None:
            await self._http.close()
        if self._channel is not None:
            await self._channel.close()
        self._ctrd = self._channel = self._http = self._registry = None


def cgroups_path(config: ContainerdConfig, worker_id: str) -> str:
    """Pure: the OCI ``linux.cgroupsPath`` for the configured cgroup driver.

    runc's systemd driver wants "slice:prefix:name" (and refuses a path); cgroupfs a path.
    """
    if config.systemd_cgroup:
        parent = config.cgroup_parent.strip("/")
        return f"{parent if parent.endswith('.slice') else 'system.slice'}:tide:{worker_id}"
    return f"{config.cgroup_parent.rstrip('/')}/{worker_id}"


def _suspend_marker(config: ContainerdConfig, worker_id: str) -> str:
    """Beside the worker's log: whether its device memory was checkpointed (survives noded restarts)."""
    return os.path.join(config.log_dir, f"{worker_id}.suspended")


def _write_marker(path: str, gpu: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("gpu\n" if gpu else "\n")


def _take_marker(path: str) -> bool:
    try:
        with open(path) as f:
            gpu = f.read().strip() == "gpu"
    except FileNotFoundError:
        return False
    os.unlink(path)
    return gpu


def _stored_spec(container: Any) -> WorkerSpec | None:
    ext = container.extensions.get(WORKER_SPEC_EXT)
    if ext is None:
        return None
    return msgspec.json.decode(ext.value, type=WorkerSpec)


def _status(container: Any, task: Any) -> WorkerStatus:
    spec = _stored_spec(container)
    labels = dict(spec.labels) if spec is not None else dict(container.labels)
    started = float(container.labels.get(STARTED_LABEL, "0") or 0)
    if task is None:  # never started, or its task vanished after a start
        if started:
            return WorkerStatus(
                id=container.id, state="exited", labels=labels, exit_code=EXIT_CODE_LOST, started_at=started
            )
        return WorkerStatus(id=container.id, state="created", labels=labels)
    state = _TASK_STATES.get(task.status, "running")
    exited = state == "exited"
    return WorkerStatus(
        id=container.id,
        state=state,
        labels=labels,
        pid=task.pid,
        exit_code=task.exit_status if exited else None,
        started_at=started,
        exited_at=task.exited_at.ToDatetime(tzinfo=datetime.UTC).timestamp() if exited else 0.0,
        rss_bytes=vm_rss(task.pid) if state == "suspended" else 0,  # its init process (the handler)
    )
