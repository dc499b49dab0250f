"""The runner follows DesiredWorker.suspended over the real process runtime (issue 16): it freezes
the worker in place (same pid) and thaws it; a worker killed while suspended is reported gone (the
coordinator drops it) and a resume of it starts it afresh."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from noded import WorkerRunner
from noded.runtime import ProcessRuntime, WorkerSpec

pytestmark = pytest.mark.timeout(60)

SCRIPT = "import time\nwhile True:\n    time.sleep(0.05)\n"


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(tmp_path / "state", prewarm=False)
    yield rt
    for w in await rt.list():
        await rt.stop(w.id, grace=1.0)
    await rt.close()


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # 20 s
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in 20 s")


async def test_suspend_resume_same_pid_and_killed_while_suspended(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    (tmp_path / "w.py").write_text(SCRIPT)
    spec = WorkerSpec(id="w-1", image=f"dir://{tmp_path}", command=[sys.executable, "-u", "w.py"])
    runner = WorkerRunner(
        runtime, spec, endpoint_id="ep", revision=1, on_change=lambda: None, suspend_settle_s=0.0
    )
    async with asyncio.TaskGroup() as tg:
        runner.run(tg)
        await _until(lambda: runner.state == "initializing")
        pid = (await runtime.status("w-1")).pid
        runner.want_suspended(True)
        await _until(lambda: runner.state == "suspended")
        assert (await runtime.status("w-1")).state == "suspended"
        assert runner.report().rss_bytes > 0
        runner.want_suspended(False)
        await _until(lambda: runner.state == "initializing")
        status = await runtime.status("w-1")
        assert status.state == "running" and status.pid == pid  # the same process, thawed
        assert runner.resume is not None and runner.resume.path == "resume" and runner.resume.thaw_s > 0
        runner.want_suspended(True)
        await _until(lambda: runner.state == "suspended")
        os.kill(pid, signal.SIGKILL)  # killed while frozen
        await _until(lambda: runner.state == "exited")
        assert "suspended" in runner.reason
        runner.want_suspended(False)  # the coordinator resumed it before it saw the exit: start afresh
        await _until(lambda: runner.state == "initializing")
        assert (await runtime.status("w-1")).pid != pid
        await runner.kill()
