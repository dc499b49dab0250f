"""The worker's boot report: ``boot.json`` in its report directory, forwarded in its WorkerReport.

The worker side of flashboot (re)writes the file after every load (flashboot/_boot.py).  While a
worker starts, the report is read soon after it appears: its first job may finish a moment later,
and the coordinator joins the two.  A file has no event to wait on, so a starting worker's file is
checked every 0.1 s (one stat) until its first report, for up to 2 minutes; after that, once per
heartbeat (a report rewritten later: another model loaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import final

import msgspec

from flashboot import read_boot
from noded.hooks._protocol import HookHost, PoststartRequest
from tide.api.nodes import DesiredWorker, WorkerBoot, WorkerReport

__all__ = ["BootReportHook"]

POLL_S = 0.1  # while a worker starts
WATCH_S = 120.0  # how long after its start a worker counts as starting


@final
class BootReportHook:
    name = "boot-report"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        report_dir = host.report_dir(worker.worker_id)
        self.path = os.path.join(report_dir, "boot.json") if report_dir else ""
        self._on_change = host.on_change
        self.boot: WorkerBoot | None = None
        self._mtime = 0

    def poll(self) -> bool:
        """Read the report if it changed; True when it did.  Cheap (one stat)."""
        if not self.path:
            return False
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return False
        if mtime == self._mtime:
            return False
        self.boot, self._mtime = read_boot(self.path), mtime
        return True

    def precreate(self) -> None:
        """Before a (re)start: the last process's report must not pass for the next one's."""
        self.boot, self._mtime = None, 0
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def poststart(self, req: PoststartRequest) -> None:
        """Watch for the first report while the worker counts as starting."""
        if not self.path:
            return
        while self.boot is None and (not req.started_at or time.time() - req.started_at < WATCH_S):
            if self.poll():
                self._on_change()
            await asyncio.sleep(POLL_S)

    def report(self, report: WorkerReport) -> WorkerReport:
        self.poll()  # a report rewritten since (another model loaded): one stat per heartbeat
        return msgspec.structs.replace(report, boot=self.boot) if self.boot is not None else report
