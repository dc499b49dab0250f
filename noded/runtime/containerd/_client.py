"""containerd's gRPC services, from the stubs gen_protos.py generates, plus error translation.

The stubs are imported dynamically (typed ``Any``): they are generated at build
time into the git-ignored ``_gen/``, and neither ``import noded.runtime`` nor
mypy may depend on them being there.  ``Ctrd`` bundles one channel's stubs
and the request metadata (namespace, and a lease while building objects).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, final

import grpc

from tide.api.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    TideError,
    Unavailable,
)

__all__ = ["Ctrd", "load_pb", "translate"]

_GEN = "noded.runtime.containerd._gen"
_MODULES = {
    "containers": "api.services.containers.v1.containers",
    "content": "api.services.content.v1.content",
    "diff": "api.services.diff.v1.diff",
    "images": "api.services.images.v1.images",
    "leases": "api.services.leases.v1.leases",
    "namespaces": "api.services.namespaces.v1.namespace",
    "snapshots": "api.services.snapshots.v1.snapshots",
    "tasks": "api.services.tasks.v1.tasks",
    "version": "api.services.version.v1.version",
    "descriptor": "api.types.descriptor",
    "mount": "api.types.mount",
    "task": "api.types.task.task",
    "runc": "runtime.v2.runc.options.oci",
}
_pb: SimpleNamespace | None = None


def load_pb() -> SimpleNamespace:
    """The generated message modules (``pb.tasks.CreateTaskRequest``...) and stubs (``pb.tasks_grpc``)."""
    global _pb
    if _pb is None:
        ns = SimpleNamespace()
        try:
            for key, mod in _MODULES.items():
                setattr(ns, key, importlib.import_module(f"{_GEN}.{mod}_pb2"))
                if key not in ("descriptor", "mount", "task", "runc"):
                    setattr(ns, f"{key}_grpc", importlib.import_module(f"{_GEN}.{mod}_pb2_grpc"))
        except ImportError as e:
            raise FailedPrecondition(
                "containerd gRPC stubs are missing: run `python -m noded.runtime.containerd.gen_protos` "
                f"(needs golang-github-containerd-containerd-dev and grpcio-tools): {e}"
            ) from e
        ns.empty = importlib.import_module("google.protobuf.empty_pb2")
        ns.any = importlib.import_module("google.protobuf.any_pb2")
        ns.field_mask = importlib.import_module("google.protobuf.field_mask_pb2")
        _pb = ns
    return _pb


_CODES: dict[grpc.StatusCode, type[TideError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def translate(e: grpc.aio.AioRpcError, what: str) -> TideError:
    """containerd's status -> our taxonomy; UNKNOWN (runc failures) counts as a precondition."""
    code = e.code()
    cls = _CODES.get(code, FailedPrecondition if code == grpc.StatusCode.UNKNOWN else Internal)
    return cls(f"{what}: containerd: {e.details()}")


@contextlib.asynccontextmanager
async def rpc(what: str) -> AsyncIterator[None]:
    """Translate gRPC errors raised inside the block."""
    try:
        yield
    except grpc.aio.AioRpcError as e:
        raise translate(e, what) from e


@final
class Ctrd:
    """Stubs over one channel, and the metadata every call carries."""

    def __init__(self, channel: grpc.aio.Channel, namespace: str) -> None:
        pb = load_pb()
        self.pb = pb
        self.namespace = namespace
        self.md: tuple[tuple[str, str], ...] = (("containerd-namespace", namespace),)
        self.containers: Any = pb.containers_grpc.ContainersStub(channel)
        self.content: Any = pb.content_grpc.ContentStub(channel)
        self.diff: Any = pb.diff_grpc.DiffStub(channel)
        self.images: Any = pb.images_grpc.ImagesStub(channel)
        self.leases: Any = pb.leases_grpc.LeasesStub(channel)
        self.namespaces: Any = pb.namespaces_grpc.NamespacesStub(channel)
        self.snapshots: Any = pb.snapshots_grpc.SnapshotsStub(channel)
        self.tasks: Any = pb.tasks_grpc.TasksStub(channel)
        self.version: Any = pb.version_grpc.VersionStub(channel)

    async def ensure_namespace(self) -> None:
        req = self.pb.namespaces.CreateNamespaceRequest(
            namespace=self.pb.namespaces.Namespace(name=self.namespace)
        )
        # Create must carry the namespace metadata too, or 1.6 fails publishing its event.
        with contextlib.suppress(AlreadyExists):
            async with rpc(f"create namespace {self.namespace}"):
                await self.namespaces.Create(req, metadata=self.md)

    @contextlib.asynccontextmanager
    async def lease(self, *, expire: datetime.timedelta) -> AsyncIterator[tuple[tuple[str, str], ...]]:
        """Metadata holding a fresh lease: what is built under it survives GC until it is deleted.

        The expiry label bounds what a crash in the middle leaves behind.
        """
        until = datetime.datetime.now(datetime.UTC) + expire
        req = self.pb.leases.CreateRequest(
            id=f"tide-{uuid.uuid4().hex}",
            labels={"containerd.io/gc.expire": until.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
        async with rpc("create lease"):
            lease = (await self.leases.Create(req, metadata=self.md)).lease
        try:
            yield (*self.md, ("containerd-lease", lease.id))
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.leases.Delete(self.pb.leases.DeleteRequest(id=lease.id), metadata=self.md)
