"""Suspending process-runtime workers: how they are frozen, and cuda-checkpoint around it.

The GPU half runs a fake ``cuda-checkpoint`` (a script logging its calls) so the
sequence is checked on any host; the real binary needs a driver >= 550."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noded.runtime import CudaCheckpoint, ProcessRuntime, WorkerSpec
from tide.api.errors import FailedPrecondition

pytestmark = pytest.mark.timeout(60)

FAKE = """#!/bin/sh
echo "$@" >> {log}
case "$1" in
  --get-state) echo {state};;
  --toggle) exit {toggle_exit};;
esac
"""


def fake_cuda_checkpoint(tmp: Path, *, state: str = "running", toggle_exit: int = 0) -> tuple[str, Path]:
    log = tmp / f"calls-{uuid.uuid4().hex[:6]}.log"
    binary = tmp / f"cuda-checkpoint-{uuid.uuid4().hex[:6]}"
    binary.write_text(FAKE.format(log=log, state=state, toggle_exit=toggle_exit))
    binary.chmod(0o755)
    return str(binary), log


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "sleep.py").write_text("import time\nprint('ready', flush=True)\ntime.sleep(120)\n")
    runtime = ProcessRuntime(tmp_path / "state")
    yield runtime
    for st in await runtime.list():
        if st.state != "exited":
            await runtime.stop(st.id, grace=0)


async def _started(rt: ProcessRuntime, tmp_path: Path, devices: list[str]) -> tuple[str, int]:
    spec = WorkerSpec(
        id=f"w-{uuid.uuid4().hex[:8]}",
        image=f"dir://{tmp_path / 'image'}",
        command=[sys.executable, "-u", "sleep.py"],
        devices=devices,
    )
    await rt.create(spec)
    status = await rt.start(spec.id)
    async with asyncio.timeout(30):
        while "ready" not in await rt.logs(spec.id):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return spec.id, status.pid


async def test_suspend_uses_the_cgroup_freezer_where_the_host_has_one(
    rt: ProcessRuntime, tmp_path: Path
) -> None:
    worker, pid = await _started(rt, tmp_path, [])
    await rt.suspend(worker)
    marker = json.loads((tmp_path / "state" / worker / "suspended.json").read_text())
    if marker["how"] == "cgroup":  # every task of its cgroup is frozen, as the kernel says
        events = (Path(marker["cgroup_dir"]) / "cgroup.events").read_text()
        assert "frozen 1" in events.splitlines()
    else:  # no writable cgroup v2: its process group is stopped
        assert marker["how"] == "sigstop"
        stat = await asyncio.to_thread(Path(f"/proc/{pid}/stat").read_text)
        assert stat.rsplit(")", 1)[1].split()[0] == "T"
    await rt.resume(worker)
    assert not (tmp_path / "state" / worker / "suspended.json").exists()


async def test_gpu_worker_is_checkpointed_before_the_freeze_and_restored_after(
    rt: ProcessRuntime, tmp_path: Path
) -> None:
    binary, calls = fake_cuda_checkpoint(tmp_path)
    rt._cuda = CudaCheckpoint.find(binary)
    worker, pid = await _started(rt, tmp_path, ["GPU-fake"])
    await rt.suspend(worker)
    assert calls.read_text().splitlines() == [f"--get-state --pid {pid}", f"--toggle --pid {pid}"]
    assert (await rt.resume(worker)).state == "running"
    assert calls.read_text().splitlines()[-1] == f"--toggle --pid {pid}"
    # A CPU worker is never handed to cuda-checkpoint.
    cpu_worker, _ = await _started(rt, tmp_path, [])
    await rt.suspend(cpu_worker)
    assert len(calls.read_text().splitlines()) == 3


async def test_without_a_usable_cuda_checkpoint_it_still_freezes(
    rt: ProcessRuntime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for cuda in (
        CudaCheckpoint(None),
        CudaCheckpoint.find(fake_cuda_checkpoint(tmp_path, state="failed")[0]),
    ):
        rt._cuda = cuda
        worker, _ = await _started(rt, tmp_path, ["GPU-fake"])
        assert (await rt.suspend(worker)).state == "suspended"
        assert "GPU memory stays allocated" in caplog.text
        assert (await rt.resume(worker)).state == "running"  # nothing to restore


async def test_a_worker_that_fails_to_restore_is_reported(rt: ProcessRuntime, tmp_path: Path) -> None:
    binary, _ = fake_cuda_checkpoint(tmp_path)
    rt._cuda = CudaCheckpoint.find(binary)
    worker, _ = await _started(rt, tmp_path, ["GPU-fake"])
    await rt.suspend(worker)
    rt._cuda = CudaCheckpoint.find(fake_cuda_checkpoint(tmp_path, toggle_exit=1)[0])
    with pytest.raises(FailedPrecondition, match="start a fresh one"):
        await rt.resume(worker)
    assert (await rt.stop(worker, grace=5)).state == "exited"  # the caller stops and replaces it


def _frozen_cgroup(path: Path) -> None:
    path.mkdir(exist_ok=True)
    (path / "cgroup.freeze").write_text("1")


async def test_a_worker_killed_while_suspended_starts_again_unfrozen(
    rt: ProcessRuntime, tmp_path: Path
) -> None:
    """Its cgroup may outlive it still frozen (the rmdir fails while a task lingers, or the
    resume found it dead): a fresh start of the same id must run, not join a frozen cgroup."""
    worker, pid = await _started(rt, tmp_path, [])
    await rt.suspend(worker)
    marker = json.loads((tmp_path / "state" / worker / "suspended.json").read_text())
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(20):
        assert (await rt.wait(worker)).state == "exited"
    with pytest.raises(FailedPrecondition):
        await rt.resume(worker)
    await rt.delete(worker)
    if marker["how"] == "cgroup":  # what a failed rmdir leaves: the frozen cgroup of that id
        _frozen_cgroup(Path(marker["cgroup_dir"]))
    await rt.create(
        WorkerSpec(id=worker, image=f"dir://{tmp_path / 'image'}", command=[sys.executable, "-u", "sleep.py"])
    )
    await rt.start(worker)
    async with asyncio.timeout(30):
        while "ready" not in await rt.logs(worker):  # noqa: ASYNC110 - it runs: not frozen
            await asyncio.sleep(0.02)
