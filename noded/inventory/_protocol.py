"""GpuInventory: what GPUs this host has, as the node API reports them."""

from __future__ import annotations

from typing import Protocol

from tide.api.nodes import GpuInfo

__all__ = ["GpuInventory"]


class GpuInventory(Protocol):
    """The host's GPUs, re-read on every call (MIG layouts and busy flags change under us).

    Contract: ``list_gpus`` is safe to call concurrently and often (each heartbeat); it runs the
    blocking driver calls in a worker thread, so it never stalls the event loop; it may take tens
    of milliseconds on a host with many MIG instances.  GPUs come back by NVML index; a GPU that
    stops answering (fell off the bus) is left out rather than failing the whole list.  Each
    ``GpuInfo`` carries the GPU UUID, Tide's canonical ``type_id``, whether Tide can partition it
    (``mig_capable``: the card supports MIG and a catalog ships for its type), its MIG mode and
    its live MIG instances keyed by placement, with their MIG UUIDs and ``busy`` flags.
    """

    async def list_gpus(self) -> list[GpuInfo]: ...
