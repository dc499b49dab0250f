"""ContainerRuntime: how noded runs one worker.

Implementations: ``ProcessRuntime`` (embedded default, like Nomad's raw_exec:
a shim process per worker so workers outlive noded) and ``ContainerdRuntime``
(production, containerd's gRPC API).  One contract suite covers both
(tests/contract/test_runtime.py).

Contract:
* ``create`` is idempotent for an identical spec (AlreadyExists for a
  different spec under the same id); ``start`` starts a created worker;
  ``stop`` sends SIGTERM, waits ``grace`` seconds, then SIGKILL, and returns
  once the worker has exited (idempotent on exited workers); ``delete``
  removes an exited worker and its state (idempotent; FailedPrecondition if
  still running).
* ``list`` returns every worker this runtime owns, including those started by
  an earlier noded process: this is how a restarted noded adopts them.  It is
  cheap and reads no logs.
* Workers survive the runtime object being closed and the noded process
  exiting: ``close`` releases resources only.
* ``wait`` blocks until the worker exits and returns its final status; many
  concurrent waiters are allowed.
* ``logs`` returns the last ``tail`` lines of stdout+stderr.
* All methods are safe to call concurrently for different ids.
"""

from __future__ import annotations

import builtins
from typing import Literal, Protocol, runtime_checkable

import msgspec

__all__ = ["ContainerRuntime", "Mount", "ResourceLimits", "Suspendable", "WorkerSpec", "WorkerStatus"]


class Mount(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    target: str
    read_only: bool = False


class ResourceLimits(msgspec.Struct, frozen=True, kw_only=True):
    cpus: float = 0.0  # 0 = unlimited
    memory_bytes: int = 0
    pids: int = 0


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # unique on the host; also the RUNPOD_POD_ID
    image: str  # "dir:///abs/path" (process runtime) or an OCI reference
    command: list[str] = []  # entrypoint; empty = the image's default
    args: list[str] = []
    env: dict[str, str] = {}
    devices: list[str] = []  # GPU or MIG UUIDs this worker may see
    mounts: list[Mount] = []
    limits: ResourceLimits = ResourceLimits()
    labels: dict[str, str] = {}  # owner, endpoint, revision: read back by list()
    read_only_rootfs: bool = False


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: Literal["created", "running", "suspended", "exited"]
    labels: dict[str, str] = {}
    pid: int = 0
    exit_code: int | None = None  # set once exited; 128+N for signal N
    started_at: float = 0.0  # unix seconds
    exited_at: float = 0.0
    rss_bytes: int = 0  # host RAM it holds, reported while suspended
    suspended_at: float = 0.0
    restore_s: float = 0.0  # resume: seconds cuda-checkpoint took to put its memory back on the GPU


class ContainerRuntime(Protocol):
    name: str  # "process" | "containerd"

    async def create(self, spec: WorkerSpec) -> None: ...

    async def start(self, worker_id: str) -> WorkerStatus: ...

    async def stop(self, worker_id: str, *, grace: float = 10.0) -> WorkerStatus: ...

    async def kill(self, worker_id: str, signal: int) -> None: ...

    async def wait(self, worker_id: str) -> WorkerStatus: ...

    async def status(self, worker_id: str) -> WorkerStatus:
        """NotFound if this runtime has no such worker."""
        ...

    async def list(self) -> list[WorkerStatus]: ...

    async def delete(self, worker_id: str) -> None: ...

    async def logs(self, worker_id: str, *, tail: int = 100) -> builtins.list[str]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Suspendable(Protocol):
    """A runtime that can freeze a running worker in place and thaw it (same pid, same memory).

    suspend: running -> suspended (device memory moved to host RAM first where
    cuda-checkpoint allows; FailedPrecondition unless running or suspended).
    resume: suspended -> running (FailedPrecondition if it cannot be brought
    back: stop it and start a fresh one).  stop/kill/wait work on a suspended
    worker; the state survives a restart of noded (adoption sees "suspended")."""

    async def suspend(self, worker_id: str) -> WorkerStatus: ...

    async def resume(self, worker_id: str) -> WorkerStatus: ...
