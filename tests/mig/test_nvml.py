"""NvmlMigBackend specifics, run over the fake libnvidia-ml (tests/mig/_fake_libnvml.py)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pynvml
import pytest

from mig import NvmlMigBackend, SimulatedMigBackend, create_instance, list_instances
from tests.mig._fake_libnvml import install
from tide.api.errors import FailedPrecondition, Internal, Unavailable


def _rig(monkeypatch: pytest.MonkeyPatch, spec: str) -> tuple[SimulatedMigBackend, NvmlMigBackend, str]:
    sim = SimulatedMigBackend.from_spec(spec)
    install(monkeypatch, sim)
    backend = NvmlMigBackend()
    return sim, backend, backend.list_gpus()[0].uuid


def test_importing_mig_does_not_load_pynvml() -> None:
    code = "import sys, mig, noded.inventory; sys.exit('pynvml' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_missing_library_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(pynvml, "nvmlLib", None)
    monkeypatch.setattr(pynvml, "CDLL", no_library)
    with pytest.raises(Unavailable, match="LIBRARY_NOT_FOUND"):
        NvmlMigBackend()


def test_set_mig_mode_reads_the_activation_status(monkeypatch: pytest.MonkeyPatch) -> None:
    sim, backend, gpu = _rig(monkeypatch, "A100-40GB")
    sim.attach_process(gpu, 17)
    mode = backend.set_mig_mode(gpu, True)  # SetMigMode returns IN_USE as its value, not an error
    assert (mode.current, mode.pending, mode.activation) == (False, True, "in_use")
    sim.detach_process(gpu, 17)
    sim.reset_gpu(gpu)
    assert backend.get_mig_mode(gpu).current


def test_pass_through_reports_reset_required(monkeypatch: pytest.MonkeyPatch) -> None:
    _, backend, gpu = _rig(monkeypatch, "H100-80GB:passthrough")
    assert backend.set_mig_mode(gpu, True).activation == "reset_required"


def test_in_use_is_failed_precondition_naming_the_nvml_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _, backend, gpu = _rig(monkeypatch, "H100-80GB:mig")
    inst = create_instance(backend, gpu, "7g.80gb", 0)
    with pytest.raises(FailedPrecondition, match="NVML_ERROR_IN_USE"):
        backend.destroy_gpu_instance(gpu, inst.gpu_instance_id)


def test_unexpected_nvml_errors_are_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    sim, backend, gpu = _rig(monkeypatch, "H100-80GB:mig")
    sim.fail_next("list_gpu_instances", Internal("boom"))
    with pytest.raises(Internal, match="NVML_ERROR_UNKNOWN"):
        backend.list_gpu_instances(gpu)


def test_a_placement_passed_by_value_is_refused_by_the_c_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quirk NvmlMigBackend works around: pynvml forwards the placement argument untouched."""
    _, _, gpu = _rig(monkeypatch, "H100-80GB:mig")
    dev = pynvml.nvmlDeviceGetHandleByUUID(gpu)
    placement = pynvml.c_nvmlGpuInstancePlacement_t()
    placement.start, placement.size = 0, 8
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(dev, 0, placement)
    gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(dev, 0, ctypes.byref(placement))
    assert pynvml.nvmlGpuInstanceGetInfo(gi).placement.size == 8


def test_profile_enums_are_walked_until_invalid_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    sim, backend, gpu = _rig(monkeypatch, "RTXPRO6000-96GB:mig")
    lib = pynvml.nvmlLib
    lib.calls.clear()
    profiles = backend.gi_profiles(gpu)
    assert lib.calls.count("nvmlDeviceGetGpuInstanceProfileInfoV") == pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
    assert {p.name: p.profile_id for p in profiles}["2g.48gb"] == 5  # the ID, not the enum (1)
    del sim


def test_driver_profile_names_that_drift_are_mapped_by_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # mig-parted#31: R535/R545 call A100-80GB's 3g.40gb "3g.39gb".  Tide names instances by ID.
    sim = SimulatedMigBackend.from_spec("A100-80GB:mig")
    install(monkeypatch, sim, rename={"3g.40gb": "3g.39gb"})
    backend = NvmlMigBackend()
    gpu = backend.list_gpus()[0].uuid
    assert "3g.39gb" in {p.name for p in backend.gi_profiles(gpu)}
    made = create_instance(backend, gpu, "3g.40gb", 4)
    assert made.profile == "3g.40gb"
    assert [i.profile for i in list_instances(backend, gpu)] == ["3g.40gb"]
