"""The worker's boot report: its side of the cold-start stages, for noded.  No torch.

noded gives each worker a directory of its own (``$TIDE_WORKER_REPORT_DIR``); after every
``load`` this process (re)writes ``boot.json`` there: when the kernel started the process, when the
handler's imports were done (its first ``load`` began: a RunPod handler imports, then loads its
weights, then calls ``runpod.serverless.start``), and each weight load with its tier.  noded reads
the file (``flashboot._boot.read_boot``) and forwards it in the worker's report; the coordinator
joins it with the times it knows (job submitted, worker placed, first job taken and done).  Without
the variable nothing is written.
"""

from __future__ import annotations

import os
import time

import msgspec

from tide.api.errors import TideError
from tide.api.nodes import WeightRestore, WorkerBoot

from .._boot import BOOT_FILE, ENV_REPORT_DIR
from .._io import write_file_atomic
from ._stats import LoadStats

__all__ = ["BootReport", "process_started_at"]

_KEPT = 16  # restores kept in the report (a handler loading many models reports the last ones)


def process_started_at() -> float:
    """Unix time the kernel started this process (a fork for pooled workers); 0.0 if unknown.

    /proc/self/stat gives the start in clock ticks after boot; CLOCK_BOOTTIME turns that into an
    age without /proc/stat's whole-second boot time.  Resolution: one tick (10 ms).
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22; fields[0] is field 3
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return time.time() - max(age, 0.0)


class BootReport:
    """This process's report; ``note`` is called under the worker lock after each load."""

    def __init__(self) -> None:
        self.boot: WorkerBoot | None = None

    def note(self, started_at: float, stats: LoadStats) -> None:
        directory = os.environ.get(ENV_REPORT_DIR)
        if not directory:
            return
        now = time.time()
        restore = WeightRestore(
            model_id=stats.model_id,
            tier=stats.tier,
            nbytes=stats.nbytes,
            seconds=stats.seconds,
            started_at=started_at,
        )
        old = self.boot
        self.boot = WorkerBoot(
            process_started_at=old.process_started_at if old else process_started_at(),
            imported_at=old.imported_at if old else started_at,
            restored_at=now,
            restores=[*(old.restores if old else [])[-(_KEPT - 1) :], restore],
        )
        try:  # best effort: a report must never fail a load
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, BOOT_FILE)
            write_file_atomic(path, [msgspec.json.encode(self.boot)], durable=False)
        except (OSError, TideError):
            pass
