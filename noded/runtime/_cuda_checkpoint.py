"""NVIDIA's ``cuda-checkpoint``: move a process's device memory to host RAM and back.

``cuda-checkpoint --toggle --pid PID`` flips a CUDA process between running and
checkpointed: on the way out the driver locks its CUDA APIs, drains work, copies
device memory to host memory it manages and releases the GPU; the way back
re-acquires it and copies everything to the original addresses (driver >= 550;
x86-64 only; no UVM, no IPC memory; the same GPU).  ``--get-state`` answers
``running``/``locked``/``checkpointed``/``failed``.  Both runtimes call it on a
suspended worker's main pid before freezing it and after thawing it.

Where the binary is missing, or ``--get-state`` fails (old driver, no CUDA
context in that process), a suspend still freezes the worker and keeps its GPU
memory allocated, with a warning: the worker still skips its imports and loads.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import final

__all__ = ["CudaCheckpoint"]

log = logging.getLogger(__name__)


@final
class CudaCheckpoint:
    def __init__(self, binary: str | None) -> None:
        self.binary = binary

    @classmethod
    def find(cls, configured: str = "") -> CudaCheckpoint:
        """The configured path, else ``cuda-checkpoint`` on PATH, else none (plain freeze)."""
        return cls(configured or shutil.which("cuda-checkpoint"))

    async def _run(self, *args: str) -> tuple[int, str]:
        assert self.binary is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
        except OSError as e:
            return 127, str(e)
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace").strip()

    async def checkpoint(self, pid: int) -> bool:
        """Move ``pid``'s device memory to host RAM: True if done, False (warned) to keep it."""
        if self.binary is None:
            log.warning("pid %d: no cuda-checkpoint binary; its GPU memory stays allocated", pid)
            return False
        code, state = await self._run("--get-state", "--pid", str(pid))
        if code != 0 or state != "running":
            log.warning("pid %d: cuda-checkpoint cannot take it (%s); GPU memory stays allocated", pid, state)
            return False
        code, out = await self._run("--toggle", "--pid", str(pid))
        if code != 0:
            log.warning("pid %d: cuda-checkpoint --toggle failed (%s); GPU memory stays allocated", pid, out)
            return False
        return True

    async def restore(self, pid: int) -> str:
        """Bring a checkpointed ``pid`` back onto its GPU; "" or why it failed."""
        if self.binary is None:
            return "no cuda-checkpoint binary to restore it"
        code, out = await self._run("--toggle", "--pid", str(pid))
        return "" if code == 0 else f"cuda-checkpoint --toggle failed: {out or code}"
