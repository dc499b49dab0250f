"""The worker hooks (noded/hooks/): their order, and what each adds to a sample worker's spec per
runtime (env, mounts) and does on stop, over a stand-in for the host's FlashBoot keeper."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from flashboot import ENV_REPORT_DIR
from noded.hooks import (
    HOOKS,
    BootReportHook,
    BundleHook,
    FlashbootHook,
    GatewayHook,
    HookHost,
    ModelCacheHook,
    Poststart,
    Precreate,
    Prepare,
    Prestart,
    PrestartRequest,
    Report,
    ReportDirHook,
    Stop,
    worker_hooks,
)
from noded.runtime import Mount, WorkerSpec
from tide.api.nodes import DesiredWorker

SPEC = WorkerSpec(id="w-1", image="dir:///x", env={"A": "1"})


class FakeKeeper:
    """What the FlashBoot hook uses of noded/_flashboot.py's FlashbootHost."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()

    def worker_env(self, endpoint_id: str) -> dict[str, str]:
        return {"TIDE_FLASHBOOT_DIR": f"/fb/owners/{endpoint_id}", "TIDE_FLASHBOOT_OWNER": endpoint_id}

    def store_paths(self, endpoint_id: str) -> tuple[str, ...]:
        return (f"/fb/owners/{endpoint_id}", f"/shm/owners/{endpoint_id}")


def _host(runtime: str, root: Path | None, keeper: FakeKeeper | None = None) -> HookHost:
    return HookHost(
        runtime=runtime,
        on_change=lambda: None,
        report_root=str(root) if root else "",
        flashboot=cast(Any, keeper),
    )


def _desired(flashboot: bool = True) -> DesiredWorker:
    return DesiredWorker(worker_id="w-1", endpoint_id="ep", revision=1, image="dir:///x", flashboot=flashboot)


def test_hooks_run_gateway_report_dir_flashboot_model_cache_bundle_then_boot_report(tmp_path: Path) -> None:
    assert (GatewayHook, ReportDirHook, FlashbootHook, ModelCacheHook, BundleHook, BootReportHook) == HOOKS
    hooks = worker_hooks(_host("process", tmp_path), _desired())
    assert hooks.names == ["gateway", "report-dir", "flashboot", "model-cache", "bundle", "boot-report"]


def test_each_hook_implements_only_its_phases(tmp_path: Path) -> None:
    phases = (Prestart, Precreate, Prepare, Poststart, Report, Stop)
    got = {
        h.name: [p.__name__ for p in phases if isinstance(h, p)]
        for h in worker_hooks(_host("process", tmp_path), _desired()).hooks
    }
    assert got == {
        "gateway": ["Prestart"],
        "report-dir": ["Prestart", "Stop"],
        "flashboot": ["Prestart", "Stop"],
        "bundle": ["Prestart", "Prepare"],
        "model-cache": ["Prestart", "Prepare", "Report", "Stop"],
        "boot-report": ["Precreate", "Poststart", "Report"],
    }


@pytest.mark.parametrize("runtime", ["process", "containerd"])
async def test_report_dir_hook_makes_binds_and_removes_the_workers_directory(
    tmp_path: Path, runtime: str
) -> None:
    hook = ReportDirHook(_host(runtime, tmp_path), _desired())
    got = hook.prestart(PrestartRequest(spec=SPEC))
    path = str(tmp_path / "w-1")
    assert got.env == {ENV_REPORT_DIR: path} and (tmp_path / "w-1").is_dir()
    assert got.mounts == ([Mount(source=path, target=path)] if runtime == "containerd" else [])
    await hook.stop()
    assert not (tmp_path / "w-1").exists()


async def test_report_dir_hook_without_a_report_root_adds_nothing() -> None:
    hook = ReportDirHook(_host("containerd", None), _desired())
    got = hook.prestart(PrestartRequest(spec=SPEC))
    assert (got.env, got.mounts) == ({}, [])
    await hook.stop()


@pytest.mark.parametrize("runtime", ["process", "containerd"])
async def test_flashboot_hook_gives_flashboot_workers_their_endpoints_store(runtime: str) -> None:
    keeper = FakeKeeper()
    got = FlashbootHook(_host(runtime, None, keeper), _desired()).prestart(PrestartRequest(spec=SPEC))
    assert got.env == {"TIDE_FLASHBOOT_DIR": "/fb/owners/ep", "TIDE_FLASHBOOT_OWNER": "ep"}
    binds = [Mount(source=p, target=p) for p in ("/fb/owners/ep", "/shm/owners/ep")]
    assert got.mounts == (binds if runtime == "containerd" else [])
    plain = FlashbootHook(_host(runtime, None, keeper), _desired(flashboot=False))
    assert plain.prestart(PrestartRequest(spec=SPEC)).env == {}
    no_keeper = FlashbootHook(_host(runtime, None), _desired())
    assert no_keeper.prestart(PrestartRequest(spec=SPEC)).env == {}


async def test_every_stopped_worker_wakes_the_keeper() -> None:
    keeper = FakeKeeper()
    await FlashbootHook(_host("process", None, keeper), _desired(flashboot=False)).stop()
    assert keeper.wake.is_set()
    await FlashbootHook(_host("process", None), _desired()).stop()  # no keeper: nothing to wake


@pytest.mark.parametrize("runtime", ["process", "containerd"])
def test_the_spec_through_every_hook_keeps_the_env_and_mount_order(tmp_path: Path, runtime: str) -> None:
    hooks = worker_hooks(_host(runtime, tmp_path, FakeKeeper()), _desired())
    spec = hooks.prestart(SPEC)
    report = str(tmp_path / "w-1")
    assert list(spec.env.items()) == [
        ("A", "1"),
        (ENV_REPORT_DIR, report),
        ("TIDE_FLASHBOOT_DIR", "/fb/owners/ep"),
        ("TIDE_FLASHBOOT_OWNER", "ep"),
    ]
    binds = [Mount(source=p, target=p) for p in (report, "/fb/owners/ep", "/shm/owners/ep")]
    assert spec.mounts == (binds if runtime == "containerd" else [])
    assert msgspec_fields(spec) == msgspec_fields(SPEC)  # nothing else changed


def msgspec_fields(spec: WorkerSpec) -> tuple[object, ...]:
    return (spec.id, spec.image, spec.command, spec.args, spec.devices, spec.limits, spec.labels)


def test_gateway_hook_points_the_workers_runpod_urls_at_the_gateway() -> None:
    spec = WorkerSpec(
        id="w-1",
        image="dir:///x",
        env={"A": "1", "RUNPOD_WEBHOOK_GET_JOB": "http://10.0.0.5:8420/v2/ep/job-take/w-1?x=1"},
    )
    host = HookHost(runtime="process", on_change=lambda: None, gateway="http://127.0.0.1:8422")
    got = GatewayHook(host, _desired()).prestart(PrestartRequest(spec=spec))
    assert got.env == {"RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:8422/v2/ep/job-take/w-1?x=1"}
    off = GatewayHook(_host("process", None), _desired()).prestart(PrestartRequest(spec=spec))
    assert (off.env, off.mounts) == ({}, [])
