"""ContainerRuntime: the protocol (``_protocol.py``), the pieces both runtimes share
(``_common.py``) and the two implementations, each in its own folder: ``process/`` (the
embedded default) and ``containerd/`` (production).

``ContainerdRuntime`` is imported lazily: it needs the gRPC stubs that
``noded/runtime/containerd/gen_protos.py`` generates at build time, and the process runtime
must work without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from noded.runtime._cuda_checkpoint import CudaCheckpoint
from noded.runtime._protocol import (
    ContainerRuntime,
    Mount,
    ResourceLimits,
    Suspendable,
    WorkerSpec,
    WorkerStatus,
)
from noded.runtime.process import DEFAULT_PREWARM_MODULES, ProcessRuntime

if TYPE_CHECKING:
    from noded.runtime.containerd import ContainerdConfig, ContainerdRuntime, RegistryAuth

__all__ = [
    "DEFAULT_PREWARM_MODULES",
    "ContainerRuntime",
    "ContainerdConfig",
    "ContainerdRuntime",
    "CudaCheckpoint",
    "Mount",
    "ProcessRuntime",
    "RegistryAuth",
    "ResourceLimits",
    "Suspendable",
    "WorkerSpec",
    "WorkerStatus",
]


_LAZY = {
    "ContainerdConfig": "noded.runtime.containerd",
    "ContainerdRuntime": "noded.runtime.containerd",
    "RegistryAuth": "noded.runtime.containerd",
}


def __getattr__(name: str) -> Any:
    # grpc and aiohttp load only when the containerd runtime is asked for.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
