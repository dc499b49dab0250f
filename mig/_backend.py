"""MigBackend: the narrow protocol between Tide and a card's MIG state.

Two implementations: :class:`mig.NvmlMigBackend` (pynvml, real hardware) and
:class:`mig.SimulatedMigBackend` (a table-driven state machine that enforces the rules of
reference/mig.md §6).  One contract suite (tests/mig/test_backend_contract.py) runs on both.

Contract, for every method:

* GPUs are named by their UUID (``"GPU-..."``), GPU instances by their GI id, compute instances
  by (GI id, CI id).  These ids are not stable across re-creation; key instances by
  (profile, placement start) and hand out MIG UUIDs.
* Calls are blocking and may be slow (mode changes and create/destroy take up to seconds on real
  hardware): call them from a worker thread, never on the event loop.  Reads may run
  concurrently; changes to one GPU must be serialised by the caller (one MIG runner per GPU).
* Nothing is cached across calls that could change the answer: re-read after every change.
* Errors come from tide.api.errors: NotFound (no such GPU or instance), FailedPrecondition (MIG
  not supported or not enabled, or the object is in use: NVML's IN_USE), ResourceExhausted (the
  placement overlaps, or a profile cap or engine budget is spent: INSUFFICIENT_RESOURCES),
  InvalidArgument (a placement or profile the card does not have), PermissionDenied (needs root
  or the MIG capability), Unavailable (GPU lost, driver gone, timeout: retry later), Internal.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from mig._catalog import Placement

__all__ = [
    "ComputeInstanceInfo",
    "GiProfileInfo",
    "GpuDevice",
    "GpuInstanceInfo",
    "MigBackend",
    "MigDevice",
    "MigMode",
]


class GpuDevice(msgspec.Struct, frozen=True, kw_only=True):
    index: int  # NVML index; not stable across reboots, the UUID is
    uuid: str  # "GPU-..."
    name: str  # as NVML reports it, e.g. "NVIDIA H100 80GB HBM3"
    memory_mb: int
    mig_capable: bool


class MigMode(msgspec.Struct, frozen=True, kw_only=True):
    current: bool
    pending: bool  # the mode after the next reset (Ampere) or VM reboot (pass-through)
    # Why a change is still pending: "in_use" (Ampere: a process holds the GPU; idle it, reset),
    # "reset_required" (pass-through or vGPU host: reboot).  "ok" when nothing is pending.
    activation: Literal["ok", "in_use", "reset_required"] = "ok"

    @property
    def reset_needed(self) -> bool:
        return self.current != self.pending


class GiProfileInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU-instance profile as the driver reports it (nvmlGpuInstanceProfileInfo_v2)."""

    profile_id: int
    profile_enum: int
    name: str  # "1g.10gb" (NVML's "MIG " prefix removed)
    slice_count: int  # compute slices
    instance_count: int  # the per-profile cap
    memory_mb: int
    multiprocessor_count: int = 0
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0


class GpuInstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    gi_id: int
    profile_id: int
    profile: str  # name, e.g. "3g.40gb"
    placement: Placement


class ComputeInstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    gi_id: int
    ci_id: int
    profile_id: int  # compute-instance profile ID (not a GI profile ID)


class MigDevice(msgspec.Struct, frozen=True, kw_only=True):
    """One compute instance as CUDA sees it: what a worker's CUDA_VISIBLE_DEVICES names."""

    uuid: str  # "MIG-..."; minted per creation, never reused
    index: int  # MIG device index; sparse, and shifts as the layout changes
    gi_id: int
    ci_id: int
    memory_mb: int
    pids: tuple[int, ...] = ()  # compute processes running on it


class MigBackend(Protocol):
    """MIG control of the GPUs on one host.  See the module docstring for the shared contract."""

    def list_gpus(self) -> list[GpuDevice]:
        """Every GPU that answers, by NVML index.  A lost GPU is left out."""
        ...

    def get_mig_mode(self, gpu: str) -> MigMode:
        """FailedPrecondition if the GPU is not MIG-capable."""
        ...

    def set_mig_mode(self, gpu: str, enabled: bool) -> MigMode:
        """Ask for a mode; returns the mode read back.  Idempotent.

        Hopper+ switches at once (FailedPrecondition if processes hold the GPU).  Ampere switches
        when the driver can reset the idle card; otherwise the change stays pending
        (``reset_needed``).  Disabling with GPU instances present is FailedPrecondition: destroy
        them first.  Needs root.
        """
        ...

    def gi_profiles(self, gpu: str) -> list[GiProfileInfo]:
        """The GPU-instance profiles, by profile enum.

        FailedPrecondition if MIG is off (NVML may still answer where the driver supports
        MIG-mode-independent queries, field 199).
        """
        ...

    def possible_placements(self, gpu: str, profile_id: int) -> list[Placement]:
        """Every legal placement of a profile, free or not; works with MIG off.  Static."""
        ...

    def remaining_capacity(self, gpu: str, profile_id: int) -> int:
        """How many more instances of the profile the driver would create now."""
        ...

    def list_gpu_instances(self, gpu: str) -> list[GpuInstanceInfo]:
        """Live GPU instances, by placement start.  FailedPrecondition if MIG is off."""
        ...

    def create_gpu_instance(self, gpu: str, profile_id: int, start: int) -> GpuInstanceInfo:
        """Create a GPU instance at an explicit placement (never the driver's choice).

        InvalidArgument if ``start`` is not a legal placement; ResourceExhausted if it overlaps
        a live instance or a cap or engine budget is spent.  Not idempotent: re-read first.
        """
        ...

    def destroy_gpu_instance(self, gpu: str, gi_id: int) -> None:
        """FailedPrecondition (IN_USE) while it has compute instances or processes; NotFound if gone."""
        ...

    def list_compute_instances(self, gpu: str, gi_id: int) -> list[ComputeInstanceInfo]: ...

    def create_compute_instance(self, gpu: str, gi_id: int) -> ComputeInstanceInfo:
        """Create the one compute instance that spans the whole GPU instance (mints a MIG UUID)."""
        ...

    def destroy_compute_instance(self, gpu: str, gi_id: int, ci_id: int) -> None:
        """FailedPrecondition (IN_USE) while processes run on it; NotFound if gone."""
        ...

    def list_mig_devices(self, gpu: str) -> list[MigDevice]:
        """Every MIG device (one per compute instance) with its UUID and processes, by index."""
        ...
