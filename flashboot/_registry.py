"""T0 registrations: which worker processes hold which models in device memory.

Each worker process owns ``<state>/workers/<token>.lock`` (an exclusive flock held for its whole
life) and ``<token>.json`` (its ``WorkerFile``, replaced atomically on every change).  A registration
whose lock can be taken belongs to a dead process and is removed by whoever notices.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from typing import Literal

import msgspec

from tide.api.errors import InvalidArgument

from ._io import write_file_atomic
from ._locks import try_exclusive
from ._safe import open_regular

__all__ = ["T0Holding", "WorkerFile", "WorkerRegistration", "live_t0"]


class T0Holding(msgspec.Struct, frozen=True, kw_only=True):
    model_id: str
    fingerprint: str
    device: str
    nbytes: int
    state: Literal["resident", "paged_out"] = "resident"


class WorkerFile(msgspec.Struct, frozen=True, kw_only=True):
    pid: int  # in the worker's own PID namespace: informational only
    holdings: tuple[T0Holding, ...] = ()


class WorkerRegistration:
    """This process's T0 registration; ``update`` is cheap, ``close`` removes it."""

    def __init__(self, state_dir: str):
        self._dir = os.path.join(state_dir, "workers")
        token = secrets.token_hex(8)
        self.lock_path = os.path.join(self._dir, f"{token}.lock")
        self.json_path = os.path.join(self._dir, f"{token}.json")
        # Lock under a private name, then rename: a scanner never sees the file unlocked.
        tmp = f"{self.lock_path}.new"
        self._fd: int | None = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.replace(tmp, self.lock_path)

    def update(self, holdings: tuple[T0Holding, ...]) -> None:
        body = msgspec.json.encode(WorkerFile(pid=os.getpid(), holdings=holdings))
        write_file_atomic(self.json_path, [body], durable=False)

    def close(self) -> None:
        if self._fd is None:
            return
        for path in (self.json_path, self.lock_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(self._fd)
        self._fd = None


def live_t0(state_dir: str) -> list[T0Holding]:
    """Holdings of live workers; registrations of dead ones are deleted on the way."""
    root = os.path.join(state_dir, "workers")
    out: list[T0Holding] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as it:
        locks = [e.path for e in it if e.name.endswith(".lock")]
    for lock in locks:
        json_path = lock.removesuffix(".lock") + ".json"
        with try_exclusive(lock, unlink=True) as dead:
            if dead:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(json_path)
                continue
        try:
            with os.fdopen(open_regular(json_path, os.O_RDONLY), "rb") as f:
                out.extend(msgspec.json.decode(f.read(), type=WorkerFile).holdings)
        except (FileNotFoundError, msgspec.DecodeError, InvalidArgument):
            continue  # registered but not yet written, mid-replace, or not a file: nothing to report
    return out
