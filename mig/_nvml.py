"""NvmlMigBackend: the MigBackend over NVML through pynvml (package nvidia-ml-py).

pynvml is imported when a backend is constructed, never at module import, so Tide runs on hosts
without a GPU.  The quirks of reference/mig.md §1 handled here:

* Two numberings: GetGpuInstanceProfileInfo takes the profile *enum* (0..COUNT-1; stop at
  INVALID_ARGUMENT, skip NOT_SUPPORTED); everything else takes the returned profile *ID*.
* Caller-allocated arrays: placements are read in two calls (count, then a ctypes array); GI and
  CI listings are read into arrays sized by the profile's instanceCount.
* CreateGpuInstanceWithPlacement gets ``ctypes.byref(placement)``: pynvml forwards the argument
  untouched and C expects a pointer.
* MIG device indices are sparse (NOT_FOUND holes); handles are never kept across calls because
  the driver reuses them after a destroy or reset.
* nvmlDeviceIsMigDeviceHandle returns a ``c_uint`` object (read ``.value``).
* SetMigMode reports the activation in its return value (IN_USE, RESET_REQUIRED), not by raising:
  the mode is read back and a pending change is reported, never assumed done.
* NVML errors become tide.api.errors at this boundary (``raise ... from``): IN_USE ->
  FailedPrecondition, INSUFFICIENT_RESOURCES -> ResourceExhausted, and so on (``_KINDS``).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

from mig._backend import ComputeInstanceInfo, GiProfileInfo, GpuDevice, GpuInstanceInfo, MigDevice, MigMode
from mig._catalog import Placement
from tide.api.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TideError,
    Unavailable,
)

__all__ = ["NvmlMigBackend"]

_MIB = 1024 * 1024

# NVML return codes by constant name -> our taxonomy; anything else is Internal.
_KINDS: dict[str, type[TideError]] = {
    "NVML_ERROR_INVALID_ARGUMENT": InvalidArgument,
    "NVML_ERROR_NOT_SUPPORTED": FailedPrecondition,
    "NVML_ERROR_NO_PERMISSION": PermissionDenied,
    "NVML_ERROR_NOT_FOUND": NotFound,
    "NVML_ERROR_IN_USE": FailedPrecondition,
    "NVML_ERROR_RESET_REQUIRED": FailedPrecondition,
    "NVML_ERROR_INVALID_STATE": FailedPrecondition,
    "NVML_ERROR_INSUFFICIENT_RESOURCES": ResourceExhausted,
    "NVML_ERROR_UNINITIALIZED": Unavailable,
    "NVML_ERROR_DRIVER_NOT_LOADED": Unavailable,
    "NVML_ERROR_LIBRARY_NOT_FOUND": Unavailable,
    "NVML_ERROR_TIMEOUT": Unavailable,
    "NVML_ERROR_GPU_IS_LOST": Unavailable,
    "NVML_ERROR_GPU_NOT_FOUND": Unavailable,
    "NVML_ERROR_NOT_READY": Unavailable,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": Unavailable,
}


def _load() -> ModuleType:
    try:
        import pynvml
    except ImportError as e:  # pragma: no cover - nvidia-ml-py is a dependency
        raise Unavailable("nvidia-ml-py (pynvml) is not installed") from e
    module: ModuleType = pynvml
    return module


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlMigBackend:
    """MigBackend over the host's NVIDIA driver.  Construct once per process; ``close`` at exit.

    Raises Unavailable when the library or driver is missing (a host without a GPU).
    """

    def __init__(self) -> None:
        self._n = _load()
        self._codes = {getattr(self._n, k): v for k, v in _KINDS.items() if hasattr(self._n, k)}
        with self._nvml("initialise NVML"):
            self._n.nvmlInit()

    def close(self) -> None:
        with contextlib.suppress(self._n.NVMLError):
            self._n.nvmlShutdown()

    def __enter__(self) -> NvmlMigBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------

    def _error(self, code: int, what: str) -> TideError:
        names = [k for k in dir(self._n) if k.startswith("NVML_ERROR_") and getattr(self._n, k) == code]
        return self._codes.get(code, Internal)(f"{what}: {names[0] if names else 'NVML error'} ({code})")

    @contextlib.contextmanager
    def _nvml(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._n.NVMLError as e:
            raise self._error(int(e.value), what) from e

    def _handle(self, gpu: str) -> Any:
        with self._nvml(f"find GPU {gpu}"):
            return self._n.nvmlDeviceGetHandleByUUID(gpu)

    def _gi_handle(self, gpu: str, gi_id: int) -> Any:
        with self._nvml(f"find GPU instance {gi_id} on {gpu}"):
            return self._n.nvmlDeviceGetGpuInstanceById(self._handle(gpu), gi_id)

    def _mig_capable(self, handle: Any) -> bool:
        try:
            self._n.nvmlDeviceGetMigMode(handle)
        except self._n.NVMLError_NotSupported:
            return False
        return True

    def _device(self, index: int) -> GpuDevice:
        n = self._n
        h = n.nvmlDeviceGetHandleByIndex(index)
        return GpuDevice(
            index=index,
            uuid=_str(n.nvmlDeviceGetUUID(h)),
            name=_str(n.nvmlDeviceGetName(h)),
            memory_mb=int(n.nvmlDeviceGetMemoryInfo(h).total) // _MIB,
            mig_capable=self._mig_capable(h),
        )

    # -- GPUs and mode -------------------------------------------------------------------------

    def list_gpus(self) -> list[GpuDevice]:
        with self._nvml("count GPUs"):
            count = int(self._n.nvmlDeviceGetCount())
        out = []
        for i in range(count):
            try:
                with self._nvml(f"read GPU {i}"):
                    out.append(self._device(i))
            except Unavailable:
                continue  # a lost GPU is left out; its own calls say why
        return out

    def get_mig_mode(self, gpu: str) -> MigMode:
        with self._nvml(f"read MIG mode of {gpu}"):
            current, pending = self._n.nvmlDeviceGetMigMode(self._handle(gpu))
        on = self._n.NVML_DEVICE_MIG_ENABLE
        act: Literal["ok", "reset_required"] = "ok" if current == pending else "reset_required"
        return MigMode(current=current == on, pending=pending == on, activation=act)

    def set_mig_mode(self, gpu: str, enabled: bool) -> MigMode:
        n = self._n
        mode = n.NVML_DEVICE_MIG_ENABLE if enabled else n.NVML_DEVICE_MIG_DISABLE
        with self._nvml(f"set MIG mode {int(enabled)} on {gpu}"):
            status = int(n.nvmlDeviceSetMigMode(self._handle(gpu), mode))
        if status not in (n.NVML_SUCCESS, n.NVML_ERROR_IN_USE, n.NVML_ERROR_RESET_REQUIRED):
            raise self._error(status, f"activate MIG mode {int(enabled)} on {gpu}")
        read = self.get_mig_mode(gpu)
        if not read.reset_needed:
            return read
        act: Literal["in_use", "reset_required"] = (
            "in_use" if status == n.NVML_ERROR_IN_USE else "reset_required"
        )
        return MigMode(current=read.current, pending=read.pending, activation=act)

    # -- profiles and placements ---------------------------------------------------------------

    def _profile(self, info: Any, enum: int) -> GiProfileInfo:
        return GiProfileInfo(
            profile_id=int(info.id),
            profile_enum=enum,
            name=_str(info.name).removeprefix("MIG "),
            slice_count=int(info.sliceCount),
            instance_count=int(info.instanceCount),
            memory_mb=int(info.memorySizeMB),
            multiprocessor_count=int(info.multiprocessorCount),
            copy_engines=int(info.copyEngineCount),
            decoders=int(info.decoderCount),
            encoders=int(info.encoderCount),
            jpegs=int(info.jpegCount),
            ofas=int(info.ofaCount),
        )

    def gi_profiles(self, gpu: str) -> list[GiProfileInfo]:
        n, h = self._n, self._handle(gpu)
        out: list[GiProfileInfo] = []
        with self._nvml(f"read MIG profiles of {gpu}"):
            for enum in range(int(getattr(n, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0x12))):
                try:
                    info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum)
                except n.NVMLError_InvalidArgument:
                    break  # past the driver's last profile enum
                except n.NVMLError_NotSupported:
                    continue  # this SKU lacks the profile, or MIG is off
                out.append(self._profile(info, enum))
        if not out and not self.get_mig_mode(gpu).current:
            raise FailedPrecondition(f"MIG mode is not enabled on {gpu}")
        return out

    def _profile_name(self, gpu: str, profile_id: int) -> str:
        for p in self.gi_profiles(gpu):
            if p.profile_id == profile_id:
                return p.name
        raise InvalidArgument(f"{gpu} has no MIG profile with ID {profile_id}")

    def possible_placements(self, gpu: str, profile_id: int) -> list[Placement]:
        n, h = self._n, self._handle(gpu)
        count = ctypes.c_uint(0)
        with self._nvml(f"read placements of profile {profile_id} on {gpu}"):
            with contextlib.suppress(n.NVMLError_InsufficientSize):
                n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
            if count.value == 0:
                return []
            arr = (n.c_nvmlGpuInstancePlacement_t * count.value)()
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, arr, ctypes.byref(count))
        return [Placement(start=int(arr[i].start), size=int(arr[i].size)) for i in range(count.value)]

    def remaining_capacity(self, gpu: str, profile_id: int) -> int:
        with self._nvml(f"read remaining capacity of profile {profile_id} on {gpu}"):
            return int(self._n.nvmlDeviceGetGpuInstanceRemainingCapacity(self._handle(gpu), profile_id))

    # -- GPU instances -------------------------------------------------------------------------

    def _gi_info(self, gi: Any, name: str) -> GpuInstanceInfo:
        info = self._n.nvmlGpuInstanceGetInfo(gi)
        placement = Placement(start=int(info.placement.start), size=int(info.placement.size))
        return GpuInstanceInfo(
            gi_id=int(info.id), profile_id=int(info.profileId), profile=name, placement=placement
        )

    def list_gpu_instances(self, gpu: str) -> list[GpuInstanceInfo]:
        n, h = self._n, self._handle(gpu)
        out: list[GpuInstanceInfo] = []
        for p in self.gi_profiles(gpu):
            arr = (n.c_nvmlGpuInstance_t * max(p.instance_count, 1))()
            count = ctypes.c_uint(0)
            with self._nvml(f"list {p.name} instances on {gpu}"):
                n.nvmlDeviceGetGpuInstances(h, p.profile_id, arr, ctypes.byref(count))
                out.extend(self._gi_info(arr[i], p.name) for i in range(count.value))
        return sorted(out, key=lambda g: g.placement.start)

    def create_gpu_instance(self, gpu: str, profile_id: int, start: int) -> GpuInstanceInfo:
        legal = {p.start: p for p in self.possible_placements(gpu, profile_id)}
        if start not in legal:
            raise InvalidArgument(
                f"{start} is not a legal start for profile {profile_id} on {gpu}: {sorted(legal)}"
            )
        name = self._profile_name(gpu, profile_id)
        placement = self._n.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, legal[start].size
        with self._nvml(f"create {name} at {start} on {gpu}"):
            gi = self._n.nvmlDeviceCreateGpuInstanceWithPlacement(
                self._handle(gpu), profile_id, ctypes.byref(placement)
            )
            return self._gi_info(gi, name)

    def destroy_gpu_instance(self, gpu: str, gi_id: int) -> None:
        gi = self._gi_handle(gpu, gi_id)
        with self._nvml(f"destroy GPU instance {gi_id} on {gpu}"):
            self._n.nvmlGpuInstanceDestroy(gi)

    # -- compute instances and MIG devices ----------------------------------------------------

    def _ci_profiles(self, gi: Any) -> list[Any]:
        """The GI's compute-instance profiles, one per profile ID, in enum order."""
        n, out, seen = self._n, [], set()
        for enum in range(int(getattr(n, "NVML_COMPUTE_INSTANCE_PROFILE_COUNT", 9))):
            try:
                info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi, enum, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
                )
            except n.NVMLError_InvalidArgument:
                break
            except n.NVMLError_NotSupported:
                continue
            if int(info.id) not in seen:
                seen.add(int(info.id))
                out.append(info)
        return out

    def list_compute_instances(self, gpu: str, gi_id: int) -> list[ComputeInstanceInfo]:
        n, gi = self._n, self._gi_handle(gpu, gi_id)
        out = []
        with self._nvml(f"list compute instances of GPU instance {gi_id} on {gpu}"):
            for p in self._ci_profiles(gi):
                arr = (n.c_nvmlComputeInstance_t * max(int(p.instanceCount), 1))()
                count = ctypes.c_uint(0)
                n.nvmlGpuInstanceGetComputeInstances(gi, p.id, arr, ctypes.byref(count))
                for i in range(count.value):
                    info = n.nvmlComputeInstanceGetInfo(arr[i])
                    out.append(
                        ComputeInstanceInfo(gi_id=gi_id, ci_id=int(info.id), profile_id=int(info.profileId))
                    )
        return sorted(out, key=lambda c: c.ci_id)

    def create_compute_instance(self, gpu: str, gi_id: int) -> ComputeInstanceInfo:
        n, gi = self._n, self._gi_handle(gpu, gi_id)
        with self._nvml(f"read GPU instance {gi_id} on {gpu}"):
            gi_profile = int(n.nvmlGpuInstanceGetInfo(gi).profileId)
        slices = next((p.slice_count for p in self.gi_profiles(gpu) if p.profile_id == gi_profile), 0)
        with self._nvml(f"create compute instance in GPU instance {gi_id} on {gpu}"):
            full = [p for p in self._ci_profiles(gi) if int(p.sliceCount) == slices]
            if not full:
                raise Internal(f"GPU instance {gi_id} on {gpu} offers no {slices}-slice compute profile")
            ci = n.nvmlGpuInstanceCreateComputeInstance(gi, full[0].id)
            info = n.nvmlComputeInstanceGetInfo(ci)
        return ComputeInstanceInfo(gi_id=gi_id, ci_id=int(info.id), profile_id=int(info.profileId))

    def destroy_compute_instance(self, gpu: str, gi_id: int, ci_id: int) -> None:
        n, gi = self._n, self._gi_handle(gpu, gi_id)
        with self._nvml(f"destroy compute instance {ci_id} of GPU instance {gi_id} on {gpu}"):
            n.nvmlComputeInstanceDestroy(n.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id))

    def _mig_device(self, mig: Any, index: int) -> MigDevice:
        n = self._n
        return MigDevice(
            uuid=_str(n.nvmlDeviceGetUUID(mig)),
            index=index,
            gi_id=int(n.nvmlDeviceGetGpuInstanceId(mig)),
            ci_id=int(n.nvmlDeviceGetComputeInstanceId(mig)),
            memory_mb=int(n.nvmlDeviceGetMemoryInfo(mig).total) // _MIB,
            pids=tuple(sorted(int(p.pid) for p in n.nvmlDeviceGetComputeRunningProcesses(mig))),
        )

    def list_mig_devices(self, gpu: str) -> list[MigDevice]:
        n, h = self._n, self._handle(gpu)
        out = []
        with self._nvml(f"list MIG devices on {gpu}"):
            try:
                count = int(n.nvmlDeviceGetMaxMigDeviceCount(h))
            except n.NVMLError_NotSupported:
                return []
            for i in range(count):
                try:
                    mig = n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)
                except n.NVMLError_NotFound:
                    continue  # indices are sparse
                flag = n.nvmlDeviceIsMigDeviceHandle(mig)  # a c_uint object: c_uint(0) is truthy
                if getattr(flag, "value", flag):
                    out.append(self._mig_device(mig, i))
        return out
