"""ContainerRuntime: the protocol and its implementations."""

from noded.runtime._protocol import ContainerRuntime, Mount, ResourceLimits, WorkerSpec, WorkerStatus

__all__ = ["ContainerRuntime", "Mount", "ResourceLimits", "WorkerSpec", "WorkerStatus"]
