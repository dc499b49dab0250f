"""The worker's own report directory (``$TIDE_WORKER_REPORT_DIR``).

Every worker gets a directory of its own under the host's report root: the worker side of
flashboot writes its boot report there (flashboot/_boot.py) and the boot report hook forwards it.
Containers get it bound at the same path; it is removed once the worker is stopped for good.
"""

from __future__ import annotations

import os
import shutil
from typing import final

from flashboot import ENV_REPORT_DIR
from noded.hooks._protocol import HookHost, PrestartRequest, PrestartResponse
from tide.api.nodes import DesiredWorker

__all__ = ["ReportDirHook"]


@final
class ReportDirHook:
    name = "report-dir"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        self._host = host
        self.path = host.report_dir(worker.worker_id)  # "" = this host keeps no reports

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        """Create the directory; its env entry and (for containers) its bind mount."""
        if not self.path:
            return PrestartResponse()
        os.makedirs(self.path, exist_ok=True)
        return PrestartResponse(env={ENV_REPORT_DIR: self.path}, mounts=self._host.binds([self.path]))

    async def stop(self) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
