"""ContainerRuntime: the protocol and its implementations.

``ContainerdRuntime`` is imported lazily: it needs the gRPC stubs that
``noded/runtime/gen_protos.py`` generates at build time, and the process runtime
must work without them.
"""

from __future__ import annotations

import importlib
from typing import Any

from noded.runtime._process import ProcessRuntime
from noded.runtime._protocol import ContainerRuntime, Mount, ResourceLimits, WorkerSpec, WorkerStatus

__all__ = [
    "ContainerRuntime",
    "ContainerdRuntime",
    "Mount",
    "ProcessRuntime",
    "ResourceLimits",
    "WorkerSpec",
    "WorkerStatus",
]


def __getattr__(name: str) -> Any:
    if name == "ContainerdRuntime":
        return importlib.import_module("noded.runtime._containerd").ContainerdRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
