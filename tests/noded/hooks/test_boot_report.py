"""The boot report hook: a starting worker's ``boot.json`` is read soon after it appears (and the
heartbeat told), re-read on every report, and forgotten before every (re)start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from noded.hooks import BootReportHook, HookHost, PoststartRequest
from tide.api.nodes import DesiredWorker, WorkerBoot, WorkerReport

BOOT = WorkerBoot(process_started_at=1.0, imported_at=2.0, restored_at=3.0)
REPORT = WorkerReport(worker_id="w-1", endpoint_id="ep", state="initializing")


def _hook(root: Path, changes: list[int]) -> BootReportHook:
    host = HookHost(runtime="process", on_change=lambda: changes.append(1), report_root=str(root))
    desired = DesiredWorker(worker_id="w-1", endpoint_id="ep", revision=1, image="dir:///x")
    (root / "w-1").mkdir(exist_ok=True)
    return BootReportHook(host, desired)


async def test_a_starting_workers_report_is_forwarded_as_soon_as_it_appears(tmp_path: Path) -> None:
    changes: list[int] = []
    hook = _hook(tmp_path, changes)
    watching = asyncio.create_task(hook.poststart(PoststartRequest(started_at=time.time())))
    await asyncio.sleep(0.15)
    assert not watching.done() and hook.report(REPORT).boot is None and changes == []
    (tmp_path / "w-1" / "boot.json").write_bytes(msgspec.json.encode(BOOT))
    async with asyncio.timeout(5):
        await watching  # done once the first report is in
    assert changes == [1] and hook.report(REPORT).boot == BOOT


async def test_a_worker_started_long_ago_is_not_watched(tmp_path: Path) -> None:
    hook = _hook(tmp_path, [])
    async with asyncio.timeout(1):
        await hook.poststart(PoststartRequest(started_at=time.time() - 600))


def test_report_rereads_a_rewritten_report_and_precreate_forgets_it(tmp_path: Path) -> None:
    hook = _hook(tmp_path, [])
    path = tmp_path / "w-1" / "boot.json"
    path.write_bytes(msgspec.json.encode(BOOT))
    assert hook.report(REPORT).boot == BOOT
    later = msgspec.structs.replace(BOOT, restored_at=9.0)
    path.write_bytes(msgspec.json.encode(later))
    assert hook.report(REPORT).boot == later
    hook.precreate()  # what every (re)start does first
    assert hook.report(REPORT).boot is None and not path.exists()


async def test_without_a_report_root_there_is_nothing_to_watch() -> None:
    host = HookHost(runtime="process", on_change=lambda: None)
    hook = BootReportHook(host, DesiredWorker(worker_id="w-1", endpoint_id="ep", revision=1, image="x"))
    await hook.poststart(PoststartRequest(started_at=time.time()))
    hook.precreate()
    assert hook.report(REPORT) == REPORT
