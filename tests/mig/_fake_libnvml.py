"""A fake ``libnvidia-ml.so`` at the C-ABI level, driven by a SimulatedMigBackend.

Installed as ``pynvml.nvmlLib``, it receives exactly what pynvml's wrappers pass to C (ctypes
handles, ``byref`` out-pointers, caller-allocated arrays) and answers with NVML return codes.  So
the real pynvml wrappers *and* NvmlMigBackend run in CPU-only tests, quirks included: a placement
passed by value instead of ``byref`` is rejected, arrays that are too small get INSUFFICIENT_SIZE,
handles of destroyed instances get INVALID_ARGUMENT, MIG device indices have NOT_FOUND holes.
Only full-size compute instances exist (as in the simulator).  Modelled on NVIDIA's mocknvml
(reference/mig.md §7.1, S7); no code from it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import pynvml as N
import pytest

from mig import SimulatedMigBackend
from tide.api.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TideError,
    Unavailable,
)

_MIB = 1024 * 1024
_CI_SLICES = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7, 5: 8, 6: 6}  # CI profile enum (= CI profile id) -> slices
_BYREF = type(ctypes.byref(ctypes.c_int()))


def _code(e: TideError) -> int:
    if isinstance(e, FailedPrecondition):
        return N.NVML_ERROR_IN_USE if "IN_USE" in e.message else N.NVML_ERROR_NOT_SUPPORTED
    table: dict[type[TideError], int] = {
        InvalidArgument: N.NVML_ERROR_INVALID_ARGUMENT,
        NotFound: N.NVML_ERROR_NOT_FOUND,
        ResourceExhausted: N.NVML_ERROR_INSUFFICIENT_RESOURCES,
        PermissionDenied: N.NVML_ERROR_NO_PERMISSION,
        Unavailable: N.NVML_ERROR_GPU_IS_LOST,
    }
    return table.get(type(e), N.NVML_ERROR_UNKNOWN)


def _put(ref: Any, value: int) -> None:
    """Write ``value`` through an out-pointer made with ``byref`` (handle or c_uint)."""
    obj = ref._obj
    if isinstance(obj, ctypes.c_uint):
        obj.value = value
    else:
        ctypes.c_void_p.from_address(ctypes.addressof(obj)).value = value


def _put_at(arr: Any, i: int, value: int) -> None:
    ctypes.c_void_p.from_address(ctypes.addressof(arr) + i * ctypes.sizeof(ctypes.c_void_p)).value = value


def _hval(handle: Any) -> int:
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


class FakeNvmlLib:
    """Attribute lookup gives the C function of that name, as ``CDLL`` does."""

    def __init__(self, sim: SimulatedMigBackend, rename: dict[str, str] | None = None) -> None:
        self.sim = sim
        self.rename = rename or {}  # profile names as a different driver release spells them
        self.calls: list[str] = []
        self._handles: dict[int, tuple[Any, ...]] = {}
        self._ids: dict[tuple[Any, ...], int] = {}
        self._gen: dict[tuple[str, int], int] = {}  # bumps when a GI is destroyed: stale handles

    def __getattr__(self, name: str) -> Callable[..., Any]:
        impl = getattr(type(self), "_" + name, None)
        if impl is None:
            raise AttributeError(name)  # pynvml maps this to FUNCTION_NOT_FOUND

        def call(*args: Any) -> Any:
            self.calls.append(name)
            if name == "nvmlErrorString":
                return impl(self, *args)
            try:
                return int(impl(self, *args) or N.NVML_SUCCESS)
            except TideError as e:
                return _code(e)

        return call

    # -- handles -------------------------------------------------------------------------------

    def _mint(self, key: tuple[Any, ...]) -> int:
        if key not in self._ids:
            self._ids[key] = 0x1000 + 16 * len(self._ids)
            self._handles[self._ids[key]] = key
        return self._ids[key]

    def _resolve(self, handle: Any, kind: str) -> tuple[Any, ...]:
        key = self._handles.get(_hval(handle))
        if key is None or key[0] != kind:
            raise InvalidArgument(f"not a {kind} handle")
        if kind in ("gi", "ci") and self._gen.get((key[1], key[2]), 0) != key[-1]:
            raise InvalidArgument("stale handle")
        return key

    def _gpu(self, handle: Any) -> str:
        return str(self._resolve(handle, "dev")[1])

    def _gi_key(self, gpu: str, gi_id: int) -> tuple[Any, ...]:
        return ("gi", gpu, gi_id, self._gen.get((gpu, gi_id), 0))

    def _gi_info(self, handle: Any) -> Any:
        _, gpu, gi_id, _ = self._resolve(handle, "gi")
        for gi in self.sim.list_gpu_instances(gpu):
            if gi.gi_id == gi_id:
                return gpu, gi
        raise InvalidArgument("GPU instance handle refers to a destroyed instance")

    def _profile(self, gpu: str, profile_id: int) -> Any:
        for p in self.sim.gi_profiles(gpu):
            if p.profile_id == profile_id:
                return p
        raise InvalidArgument(f"no profile id {profile_id}")

    # -- init, devices -------------------------------------------------------------------------

    def _nvmlInitWithFlags(self, flags: int) -> int:
        return 0

    def _nvmlShutdown(self) -> int:
        return 0

    def _nvmlErrorString(self, code: int) -> bytes:
        return f"fake NVML error {code}".encode()

    def _nvmlDeviceGetCount_v2(self, count: Any) -> None:
        _put(count, len(self.sim._gpus))

    def _nvmlDeviceGetHandleByIndex_v2(self, index: Any, out: Any) -> int:
        devices = list(self.sim._gpus.values())
        if index.value >= len(devices):
            return N.NVML_ERROR_INVALID_ARGUMENT
        if devices[index.value].lost:
            return N.NVML_ERROR_GPU_IS_LOST
        _put(out, self._mint(("dev", devices[index.value].device.uuid)))
        return 0

    def _nvmlDeviceGetHandleByUUID(self, uuid: Any, out: Any) -> int:
        text = uuid.value.decode()
        if text.startswith("MIG-"):
            for dev in self.sim.list_gpus():
                if any(m.uuid == text for m in self.sim.list_mig_devices(dev.uuid)):
                    _put(out, self._mint(("mig", dev.uuid, text)))
                    return 0
            return N.NVML_ERROR_NOT_FOUND
        if text not in self.sim._gpus:
            return N.NVML_ERROR_NOT_FOUND
        _put(out, self._mint(("dev", text)))
        return 0

    def _mig(self, handle: Any) -> tuple[str, Any]:
        _, gpu, uuid = self._resolve(handle, "mig")
        for m in self.sim.list_mig_devices(gpu):
            if m.uuid == uuid:
                return gpu, m
        raise InvalidArgument("MIG device handle refers to a destroyed device")

    def _nvmlDeviceGetUUID(self, handle: Any, buf: Any, size: Any) -> None:
        key = self._handles.get(_hval(handle), ("",))
        buf.value = (key[2] if key[0] == "mig" else self._gpu(handle)).encode()

    def _nvmlDeviceGetName(self, handle: Any, buf: Any, size: Any) -> None:
        gpu = self._gpu(handle)
        buf.value = next(d.name for d in self.sim.list_gpus() if d.uuid == gpu).encode()

    def _nvmlDeviceGetMemoryInfo(self, handle: Any, out: Any) -> None:
        if self._handles.get(_hval(handle), ("",))[0] == "mig":
            total = self._mig(handle)[1].memory_mb * _MIB
        else:
            gpu = self._gpu(handle)
            total = next(d.memory_mb for d in self.sim.list_gpus() if d.uuid == gpu) * _MIB
        out._obj.total, out._obj.free, out._obj.used = total, total, 0

    def _nvmlDeviceGetComputeRunningProcesses_v3(self, handle: Any, count: Any, arr: Any) -> int:
        pids = self._mig(handle)[1].pids
        if arr is None:
            _put(count, len(pids))
            return N.NVML_ERROR_INSUFFICIENT_SIZE if pids else 0
        for i, pid in enumerate(pids):
            arr[i].pid, arr[i].usedGpuMemory = pid, 0
        _put(count, len(pids))
        return 0

    # -- MIG mode ------------------------------------------------------------------------------

    def _nvmlDeviceGetMigMode(self, handle: Any, current: Any, pending: Any) -> None:
        mode = self.sim.get_mig_mode(self._gpu(handle))
        _put(current, int(mode.current))
        _put(pending, int(mode.pending))

    def _nvmlDeviceSetMigMode(self, handle: Any, mode: int, status: Any) -> None:
        got = self.sim.set_mig_mode(self._gpu(handle), bool(mode))
        codes = {"ok": 0, "in_use": N.NVML_ERROR_IN_USE, "reset_required": N.NVML_ERROR_RESET_REQUIRED}
        _put(status, codes[got.activation])

    # -- GPU instance profiles and placements --------------------------------------------------

    def _fill_profile(self, out: Any, p: Any) -> None:
        info = out._obj
        if info.version != N.nvmlGpuInstanceProfileInfo_v2:
            raise InvalidArgument("profile info struct version not set")
        info.id, info.sliceCount, info.instanceCount = p.profile_id, p.slice_count, p.instance_count
        info.multiprocessorCount, info.copyEngineCount = p.multiprocessor_count, p.copy_engines
        info.decoderCount, info.encoderCount, info.jpegCount = p.decoders, p.encoders, p.jpegs
        info.ofaCount, info.memorySizeMB, info.name = (
            p.ofas,
            p.memory_mb,
            f"MIG {self.rename.get(p.name, p.name)}".encode(),
        )

    def _nvmlDeviceGetGpuInstanceProfileInfoV(self, handle: Any, enum: int, out: Any) -> int:
        if enum >= N.NVML_GPU_INSTANCE_PROFILE_COUNT:
            return N.NVML_ERROR_INVALID_ARGUMENT
        found = [p for p in self.sim.gi_profiles(self._gpu(handle)) if p.profile_enum == enum]
        if not found:
            return N.NVML_ERROR_NOT_SUPPORTED
        self._fill_profile(out, found[0])
        return 0

    def _nvmlDeviceGetGpuInstanceProfileInfoByIdV(self, handle: Any, profile_id: int, out: Any) -> None:
        self._fill_profile(out, self._profile(self._gpu(handle), profile_id))

    def _nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, handle: Any, pid: int, arr: Any, n: Any) -> int:
        placements = self.sim.possible_placements(self._gpu(handle), pid)
        if arr is None:
            _put(n, len(placements))
            return 0
        if len(arr) < len(placements) or n._obj.value < len(placements):
            _put(n, len(placements))
            return N.NVML_ERROR_INSUFFICIENT_SIZE
        for i, pl in enumerate(placements):
            arr[i].start, arr[i].size = pl.start, pl.size
        _put(n, len(placements))
        return 0

    def _nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: Any, pid: int, count: Any) -> None:
        _put(count, self.sim.remaining_capacity(self._gpu(handle), pid))

    # -- GPU instances -------------------------------------------------------------------------

    def _nvmlDeviceCreateGpuInstanceWithPlacement(self, handle: Any, pid: int, pl: Any, out: Any) -> int:
        if not isinstance(pl, _BYREF) or not isinstance(pl._obj, N.c_nvmlGpuInstancePlacement_t):
            return N.NVML_ERROR_INVALID_ARGUMENT  # C would read garbage: the placement must be byref
        gpu = self._gpu(handle)
        legal = {(p.start, p.size) for p in self.sim.possible_placements(gpu, pid)}
        if (pl._obj.start, pl._obj.size) not in legal:
            return N.NVML_ERROR_INVALID_ARGUMENT
        gi = self.sim.create_gpu_instance(gpu, pid, pl._obj.start)
        _put(out, self._mint(self._gi_key(gpu, gi.gi_id)))
        return 0

    def _nvmlDeviceCreateGpuInstance(self, handle: Any, pid: int, out: Any) -> None:
        gpu = self._gpu(handle)
        gi = self.sim.create_gpu_instance_auto(gpu, pid)
        _put(out, self._mint(self._gi_key(gpu, gi.gi_id)))

    def _nvmlDeviceGetGpuInstances(self, handle: Any, pid: int, arr: Any, count: Any) -> int:
        gpu = self._gpu(handle)
        gis = [g for g in self.sim.list_gpu_instances(gpu) if g.profile_id == pid]
        _put(count, len(gis))
        if len(arr) < len(gis):
            return N.NVML_ERROR_INSUFFICIENT_SIZE
        for i, gi in enumerate(gis):
            _put_at(arr, i, self._mint(self._gi_key(gpu, gi.gi_id)))
        return 0

    def _nvmlDeviceGetGpuInstanceById(self, handle: Any, gi_id: int, out: Any) -> int:
        gpu = self._gpu(handle)
        if not any(g.gi_id == gi_id for g in self.sim.list_gpu_instances(gpu)):
            return N.NVML_ERROR_NOT_FOUND
        _put(out, self._mint(self._gi_key(gpu, gi_id)))
        return 0

    def _nvmlGpuInstanceGetInfo(self, handle: Any, out: Any) -> None:
        gpu, gi = self._gi_info(handle)
        info = out._obj
        info.id, info.profileId = gi.gi_id, gi.profile_id
        info.placement.start, info.placement.size = gi.placement.start, gi.placement.size
        ctypes.c_void_p.from_address(ctypes.addressof(info)).value = self._mint(("dev", gpu))

    def _nvmlGpuInstanceDestroy(self, handle: Any) -> None:
        gpu, gi = self._gi_info(handle)
        self.sim.destroy_gpu_instance(gpu, gi.gi_id)
        self._gen[(gpu, gi.gi_id)] = self._gen.get((gpu, gi.gi_id), 0) + 1

    # -- compute instances ---------------------------------------------------------------------

    def _nvmlGpuInstanceGetComputeInstanceProfileInfoV(self, gi_h: Any, enum: int, _e: int, out: Any) -> int:
        gpu, gi = self._gi_info(gi_h)
        if enum >= N.NVML_COMPUTE_INSTANCE_PROFILE_COUNT:
            return N.NVML_ERROR_INVALID_ARGUMENT
        slices = self._profile(gpu, gi.profile_id).slice_count
        if _CI_SLICES.get(enum, 99) > slices:
            return N.NVML_ERROR_NOT_SUPPORTED
        info = out._obj
        info.id, info.sliceCount, info.instanceCount = enum, _CI_SLICES[enum], slices // _CI_SLICES[enum]
        info.name = f"MIG {_CI_SLICES[enum]}c".encode()
        return 0

    def _ci_key(self, gpu: str, gi_id: int, ci_id: int) -> tuple[Any, ...]:
        return ("ci", gpu, gi_id, ci_id, self._gen.get((gpu, gi_id), 0))

    def _nvmlGpuInstanceCreateComputeInstance(self, handle: Any, ci_pid: int, out: Any) -> int:
        gpu, gi = self._gi_info(handle)
        if _CI_SLICES.get(ci_pid) != self._profile(gpu, gi.profile_id).slice_count:
            return N.NVML_ERROR_NOT_SUPPORTED  # the simulator models full-size CIs only
        ci = self.sim.create_compute_instance(gpu, gi.gi_id)
        _put(out, self._mint(self._ci_key(gpu, gi.gi_id, ci.ci_id)))
        return 0

    def _nvmlGpuInstanceGetComputeInstances(self, handle: Any, ci_pid: int, arr: Any, count: Any) -> int:
        gpu, gi = self._gi_info(handle)
        cis = [c for c in self.sim.list_compute_instances(gpu, gi.gi_id) if c.profile_id == ci_pid]
        _put(count, len(cis))
        if len(arr) < len(cis):
            return N.NVML_ERROR_INSUFFICIENT_SIZE
        for i, ci in enumerate(cis):
            _put_at(arr, i, self._mint(self._ci_key(gpu, gi.gi_id, ci.ci_id)))
        return 0

    def _nvmlGpuInstanceGetComputeInstanceById(self, handle: Any, ci_id: int, out: Any) -> int:
        gpu, gi = self._gi_info(handle)
        if not any(c.ci_id == ci_id for c in self.sim.list_compute_instances(gpu, gi.gi_id)):
            return N.NVML_ERROR_NOT_FOUND
        _put(out, self._mint(self._ci_key(gpu, gi.gi_id, ci_id)))
        return 0

    def _ci(self, handle: Any) -> tuple[str, int, Any]:
        _, gpu, gi_id, ci_id, _ = self._resolve(handle, "ci")
        for ci in self.sim.list_compute_instances(gpu, gi_id):
            if ci.ci_id == ci_id:
                return gpu, gi_id, ci
        raise InvalidArgument("compute instance handle refers to a destroyed instance")

    def _nvmlComputeInstanceGetInfo_v2(self, handle: Any, out: Any) -> None:
        _, _, ci = self._ci(handle)
        out._obj.id, out._obj.profileId = ci.ci_id, ci.profile_id

    def _nvmlComputeInstanceDestroy(self, handle: Any) -> None:
        gpu, gi_id, ci = self._ci(handle)
        self.sim.destroy_compute_instance(gpu, gi_id, ci.ci_id)

    # -- MIG devices ---------------------------------------------------------------------------

    def _nvmlDeviceGetMaxMigDeviceCount(self, handle: Any, count: Any) -> None:
        gpu = self._gpu(handle)
        cat = self.sim.catalog(gpu)
        on = cat is not None and self.sim.get_mig_mode(gpu).current
        _put(count, cat.max_mig_devices if cat is not None and on else 0)

    def _nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: Any, out: Any) -> int:
        gpu = self._gpu(handle)
        for m in self.sim.list_mig_devices(gpu):
            if m.index == index.value:
                _put(out, self._mint(("mig", gpu, m.uuid)))
                return 0
        return N.NVML_ERROR_NOT_FOUND

    def _nvmlDeviceIsMigDeviceHandle(self, handle: Any, out: Any) -> None:
        _put(out, int(self._handles.get(_hval(handle), ("",))[0] == "mig"))

    def _nvmlDeviceGetGpuInstanceId(self, handle: Any, out: Any) -> None:
        _put(out, self._mig(handle)[1].gi_id)

    def _nvmlDeviceGetComputeInstanceId(self, handle: Any, out: Any) -> None:
        _put(out, self._mig(handle)[1].ci_id)


def install(
    monkeypatch: pytest.MonkeyPatch, sim: SimulatedMigBackend, rename: dict[str, str] | None = None
) -> FakeNvmlLib:
    """Make pynvml talk to ``sim`` through a FakeNvmlLib for the rest of the test."""
    lib = FakeNvmlLib(sim, rename)
    monkeypatch.setattr(N, "nvmlLib", lib)
    monkeypatch.setattr(N, "_nvmlGetFunctionPointer_cache", {})
    return lib
