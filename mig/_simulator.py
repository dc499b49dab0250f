"""SimulatedMigBackend: a table-driven MIG state machine with NVML's rules (reference/mig.md §6).

The SKU tables come from the catalogs; the rules from mig._rules (shared with the planner).  What
it emulates, beyond the MigBackend contract:

* MIG-incapable cards (types with no catalog): mode calls are FailedPrecondition (NOT_SUPPORTED).
* Mode changes: Hopper and later switch at once unless a process holds the card (IN_USE); Ampere
  switches when the card is idle (the driver resets it) and otherwise leaves the change pending
  until :meth:`reset_gpu`; a pass-through card (``passthrough=True``) always waits for a reboot
  (RESET_REQUIRED).  :meth:`reboot` wipes every instance and, on Hopper+, the mode itself.
* GI and CI ids from the lowest free number; MIG device indices sparse (holes after destroys);
  MIG UUIDs minted per compute-instance creation from a seeded RNG (stable per seed and order).
* Driver-chosen placement (:meth:`create_gpu_instance_auto`, never used by Tide) follows the
  min-blocking heuristic, which reproduces NVIDIA's documented examples.
* Faults: :meth:`fail_next` (any TideError for the next calls of an operation), :meth:`set_latency`
  (slow operations, through the injected ``sleep``), :meth:`lose_gpu` (GPU_IS_LOST).

Thread-safe: one lock guards the state; latency is spent outside it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mig._backend import ComputeInstanceInfo, GiProfileInfo, GpuDevice, GpuInstanceInfo, MigDevice, MigMode
from mig._catalog import Catalog, Placement, Profile
from mig._rules import Slot, min_blocking_start, remaining_capacity, why_not
from mig._sim_spec import SimGpu, device_for, parse_gpu_spec
from tide.api.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TideError,
    Unavailable,
)

__all__ = ["SimGpu", "SimulatedMigBackend", "parse_gpu_spec"]

# Compute-instance profile ID of the CI that spans a GI with this many compute slices (= CI enum).
_FULL_CI_PROFILE = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


@dataclass
class _Ci:
    ci_id: int
    uuid: str
    index: int
    pids: set[int] = field(default_factory=set)


@dataclass
class _Gi:
    gi_id: int
    profile: Profile
    start: int
    cis: dict[int, _Ci] = field(default_factory=dict)


@dataclass
class _Gpu:
    device: GpuDevice
    catalog: Catalog | None
    passthrough: bool
    current: bool = False
    pending: bool = False
    lost: bool = False
    pids: set[int] = field(default_factory=set)  # processes on the whole card
    gis: dict[int, _Gi] = field(default_factory=dict)

    def slots(self) -> list[Slot]:
        return [Slot(profile=g.profile.name, start=g.start) for g in self.gis.values()]

    def busy(self) -> bool:
        return bool(self.pids) or any(c.pids for g in self.gis.values() for c in g.cis.values())


def _profile_info(p: Profile) -> GiProfileInfo:
    return GiProfileInfo(
        profile_id=p.profile_id,
        profile_enum=p.profile_enum,
        name=p.name,
        slice_count=p.compute_slices,
        instance_count=p.max_count,
        memory_mb=p.memory_mb,
        multiprocessor_count=p.sm_count,
        copy_engines=p.copy_engines,
        decoders=p.decoders,
        encoders=p.encoders,
        jpegs=p.jpegs,
        ofas=p.ofas,
    )


def _gi_info(gi: _Gi) -> GpuInstanceInfo:
    placement = Placement(start=gi.start, size=gi.profile.size)
    return GpuInstanceInfo(
        gi_id=gi.gi_id, profile_id=gi.profile.profile_id, profile=gi.profile.name, placement=placement
    )


def _lowest_free(used: set[int], first: int = 0) -> int:
    n = first
    while n in used:
        n += 1
    return n


class SimulatedMigBackend:
    """A MigBackend over simulated cards.  Deterministic for a given seed and call sequence."""

    def __init__(
        self, gpus: Sequence[SimGpu], *, seed: int = 0, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = threading.RLock()
        self._faults: dict[str, list[TideError]] = {}
        self._latency: dict[str, float] = {}
        self._gpus: dict[str, _Gpu] = {}
        for i, spec in enumerate(gpus):
            dev, cat = device_for(i, self._mint("GPU-"), spec)
            on = spec.mig_enabled and cat is not None
            self._gpus[dev.uuid] = _Gpu(dev, cat, spec.passthrough, current=on, pending=on)

    @classmethod
    def from_spec(cls, spec: str, *, seed: int = 0) -> SimulatedMigBackend:
        return cls(parse_gpu_spec(spec), seed=seed)

    def _mint(self, prefix: str) -> str:
        return prefix + str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- fault injection and test controls ---------------------------------------------------

    def fail_next(self, op: str, error: TideError, times: int = 1) -> None:
        """The next ``times`` calls of method ``op`` (or ``"*"``: any method) raise ``error``."""
        with self._lock:
            self._faults.setdefault(op, []).extend([error] * times)

    def set_latency(self, op: str, seconds: float) -> None:
        """Every call of ``op`` (or ``"*"``) first spends ``seconds`` in the injected sleep."""
        with self._lock:
            self._latency[op] = seconds

    def lose_gpu(self, gpu: str) -> None:
        """The card falls off the bus: it leaves list_gpus and its calls raise Unavailable."""
        with self._lock:
            self._gpu(gpu).lost = True

    def attach_process(self, gpu: str, pid: int, mig_uuid: str | None = None) -> None:
        """A process starts on a MIG device (by UUID) or, without one, on the whole card."""
        with self._lock:
            g = self._gpu(gpu)
            if mig_uuid is None:
                g.pids.add(pid)
                return
            for gi in g.gis.values():
                for ci in gi.cis.values():
                    if ci.uuid == mig_uuid:
                        ci.pids.add(pid)
                        return
            raise NotFound(f"no MIG device {mig_uuid} on {gpu}")

    def detach_process(self, gpu: str, pid: int) -> None:
        with self._lock:
            g = self._gpu(gpu)
            g.pids.discard(pid)
            for gi in g.gis.values():
                for ci in gi.cis.values():
                    ci.pids.discard(pid)

    def reset_gpu(self, gpu: str) -> MigMode:
        """``nvidia-smi --gpu-reset``: applies a pending mode; needs an idle card, not pass-through."""
        g = self._enter("reset_gpu", gpu)
        with self._lock:
            if g.passthrough:
                raise FailedPrecondition(f"{gpu}: GPU reset is blocked in pass-through; reboot the VM")
            if g.busy():
                raise FailedPrecondition(f"{gpu}: IN_USE: processes hold the GPU, stop them to reset")
            g.gis.clear()
            g.current = g.pending
            return MigMode(current=g.current, pending=g.pending)

    def reboot(self) -> None:
        """Host reboot or driver reload: instances and processes vanish; Hopper+ forgets MIG mode."""
        with self._lock:
            for g in self._gpus.values():
                g.gis.clear()
                g.pids.clear()
                g.lost = False
                if g.catalog is not None and g.catalog.resetless:
                    g.current = g.pending = False
                else:
                    g.current = g.pending  # Ampere keeps the mode in the InfoROM

    def catalog(self, gpu: str) -> Catalog | None:
        with self._lock:
            return self._gpu(gpu).catalog

    # -- internals -----------------------------------------------------------------------------

    def _gpu(self, gpu: str) -> _Gpu:
        g = self._gpus.get(gpu)
        if g is None:
            raise NotFound(f"no GPU {gpu!r}")
        return g

    def _fault(self, op: str) -> None:
        """Raise an injected fault for ``op``, or spend its injected latency."""
        with self._lock:
            for key in (op, "*"):
                if self._faults.get(key):
                    raise self._faults[key].pop(0)
            delay = self._latency.get(op, self._latency.get("*", 0.0))
        if delay:
            self._sleep(delay)

    def _enter(self, op: str, gpu: str) -> _Gpu:
        self._fault(op)
        with self._lock:
            g = self._gpu(gpu)
            if g.lost:
                raise Unavailable(f"GPU {gpu} is lost (GPU_IS_LOST): it needs a reset or a reboot")
            return g

    def _capable(self, g: _Gpu) -> Catalog:
        if g.catalog is None:
            raise FailedPrecondition(f"{g.device.name} ({g.device.uuid}) does not support MIG")
        return g.catalog

    def _mig_on(self, g: _Gpu) -> Catalog:
        cat = self._capable(g)
        if not g.current:
            raise FailedPrecondition(f"MIG mode is not enabled on {g.device.uuid}")
        return cat

    def _gi(self, g: _Gpu, gi_id: int) -> _Gi:
        self._mig_on(g)
        gi = g.gis.get(gi_id)
        if gi is None:
            raise NotFound(f"no GPU instance {gi_id} on {g.device.uuid}")
        return gi

    def _new_gi(self, g: _Gpu, p: Profile, start: int) -> GpuInstanceInfo:
        cat = self._mig_on(g)
        if start not in p.starts:
            raise InvalidArgument(f"{start} is not a legal placement start for {p.name} ({list(p.starts)})")
        if (reason := why_not(cat, g.slots(), p.name, start)) is not None:
            raise ResourceExhausted(f"INSUFFICIENT_RESOURCES on {g.device.uuid}: {reason}")
        gi = _Gi(gi_id=_lowest_free(set(g.gis), 1), profile=p, start=start)
        g.gis[gi.gi_id] = gi
        return _gi_info(gi)

    # -- MigBackend ----------------------------------------------------------------------------

    def list_gpus(self) -> list[GpuDevice]:
        self._fault("list_gpus")
        with self._lock:
            return [g.device for g in self._gpus.values() if not g.lost]

    def get_mig_mode(self, gpu: str) -> MigMode:
        g = self._enter("get_mig_mode", gpu)
        with self._lock:
            self._capable(g)
            act: Literal["ok", "reset_required"] = "ok" if g.current == g.pending else "reset_required"
            return MigMode(current=g.current, pending=g.pending, activation=act)

    def set_mig_mode(self, gpu: str, enabled: bool) -> MigMode:
        g = self._enter("set_mig_mode", gpu)
        with self._lock:
            cat = self._capable(g)
            if not enabled and g.gis:
                raise FailedPrecondition(f"IN_USE: {gpu} still has GPU instances; destroy them first")
            if g.current == enabled:
                g.pending = enabled
                return MigMode(current=g.current, pending=g.pending)
            if cat.resetless and g.busy() and not g.passthrough:
                raise FailedPrecondition(f"IN_USE: processes hold {gpu}; stop them to change MIG mode")
            g.pending = enabled
            if g.passthrough:
                return MigMode(current=g.current, pending=enabled, activation="reset_required")
            if g.busy():  # Ampere: the driver's reset needs an idle card
                return MigMode(current=g.current, pending=enabled, activation="in_use")
            g.current = enabled
            return MigMode(current=enabled, pending=enabled)

    def gi_profiles(self, gpu: str) -> list[GiProfileInfo]:
        g = self._enter("gi_profiles", gpu)
        with self._lock:
            cat = self._mig_on(g)
            return [_profile_info(p) for p in sorted(cat.profiles, key=lambda p: p.profile_enum)]

    def possible_placements(self, gpu: str, profile_id: int) -> list[Placement]:
        g = self._enter("possible_placements", gpu)
        with self._lock:
            return list(self._capable(g).profile_by_id(profile_id).placements)

    def remaining_capacity(self, gpu: str, profile_id: int) -> int:
        g = self._enter("remaining_capacity", gpu)
        with self._lock:
            cat = self._mig_on(g)
            return remaining_capacity(cat, g.slots(), cat.profile_by_id(profile_id).name)

    def list_gpu_instances(self, gpu: str) -> list[GpuInstanceInfo]:
        g = self._enter("list_gpu_instances", gpu)
        with self._lock:
            self._mig_on(g)
            return [_gi_info(gi) for gi in sorted(g.gis.values(), key=lambda gi: gi.start)]

    def create_gpu_instance(self, gpu: str, profile_id: int, start: int) -> GpuInstanceInfo:
        g = self._enter("create_gpu_instance", gpu)
        with self._lock:
            return self._new_gi(g, self._mig_on(g).profile_by_id(profile_id), start)

    def create_gpu_instance_auto(self, gpu: str, profile_id: int) -> GpuInstanceInfo:
        """The driver's own placement (nvmlDeviceCreateGpuInstance): for golden tests only."""
        g = self._enter("create_gpu_instance", gpu)
        with self._lock:
            cat = self._mig_on(g)
            p = cat.profile_by_id(profile_id)
            start = min_blocking_start(cat, g.slots(), p.name)
            if start is None:
                raise ResourceExhausted(f"INSUFFICIENT_RESOURCES: no free placement for {p.name} on {gpu}")
            return self._new_gi(g, p, start)

    def destroy_gpu_instance(self, gpu: str, gi_id: int) -> None:
        g = self._enter("destroy_gpu_instance", gpu)
        with self._lock:
            gi = self._gi(g, gi_id)
            if gi.cis:
                raise FailedPrecondition(f"IN_USE: GPU instance {gi_id} on {gpu} has compute instances")
            del g.gis[gi_id]

    def list_compute_instances(self, gpu: str, gi_id: int) -> list[ComputeInstanceInfo]:
        g = self._enter("list_compute_instances", gpu)
        with self._lock:
            gi = self._gi(g, gi_id)
            pid = _FULL_CI_PROFILE[gi.profile.compute_slices]
            return [ComputeInstanceInfo(gi_id=gi_id, ci_id=c, profile_id=pid) for c in sorted(gi.cis)]

    def create_compute_instance(self, gpu: str, gi_id: int) -> ComputeInstanceInfo:
        g = self._enter("create_compute_instance", gpu)
        with self._lock:
            gi, cat = self._gi(g, gi_id), self._mig_on(g)
            if gi.cis:
                raise ResourceExhausted(f"INSUFFICIENT_RESOURCES: GPU instance {gi_id} is fully used")
            used = {c.index for x in g.gis.values() for c in x.cis.values()}
            index = _lowest_free(used)
            if index >= cat.max_mig_devices:
                raise ResourceExhausted(f"INSUFFICIENT_RESOURCES: {gpu} has no free MIG device index")
            ci = _Ci(ci_id=_lowest_free(set(gi.cis)), uuid=self._mint("MIG-"), index=index)
            gi.cis[ci.ci_id] = ci
            pid = _FULL_CI_PROFILE[gi.profile.compute_slices]
            return ComputeInstanceInfo(gi_id=gi_id, ci_id=ci.ci_id, profile_id=pid)

    def destroy_compute_instance(self, gpu: str, gi_id: int, ci_id: int) -> None:
        g = self._enter("destroy_compute_instance", gpu)
        with self._lock:
            gi = self._gi(g, gi_id)
            ci = gi.cis.get(ci_id)
            if ci is None:
                raise NotFound(f"no compute instance {ci_id} in GPU instance {gi_id} on {gpu}")
            if ci.pids:
                raise FailedPrecondition(f"IN_USE: processes {sorted(ci.pids)} run on {ci.uuid}")
            del gi.cis[ci_id]

    def list_mig_devices(self, gpu: str) -> list[MigDevice]:
        g = self._enter("list_mig_devices", gpu)
        with self._lock:
            if g.catalog is None or not g.current:
                return []  # NVML: max MIG device count is 0 with MIG off
            devices = [
                MigDevice(
                    uuid=ci.uuid,
                    index=ci.index,
                    gi_id=gi.gi_id,
                    ci_id=ci.ci_id,
                    memory_mb=gi.profile.memory_mb,
                    pids=tuple(sorted(ci.pids)),
                )
                for gi in g.gis.values()
                for ci in gi.cis.values()
            ]
            return sorted(devices, key=lambda d: d.index)
