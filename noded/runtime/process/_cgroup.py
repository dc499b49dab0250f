"""cgroup v2 limits for the process runtime, where the host lets us write them.

RLIMIT_AS would count a CUDA process's huge virtual mappings and break torch,
and RLIMIT_NPROC is per user, not per worker, so neither is used.  Limits are
applied only through a writable cgroup v2 hierarchy (``<mount>/tide-workers/<id>``);
elsewhere (cgroup v1 hosts, unprivileged noded) they are skipped with a logged
note.  Production isolation is the containerd runtime's job.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import final

from noded.runtime._protocol import ResourceLimits

__all__ = ["Cgroup2"]

log = logging.getLogger(__name__)

_CONTROLLERS = ("cpu", "memory", "pids")
_CPU_PERIOD_US = 100_000


def _cgroup2_mount(mounts: str) -> str | None:
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            return fields[1]
    return None


@final
class Cgroup2:
    """A parent cgroup under which each worker with limits gets its own child (or none)."""

    def __init__(self, parent: str | None, *, reason: str = "") -> None:
        self.parent = parent
        self.reason = reason

    @classmethod
    def detect(cls, *, name: str = "tide-workers") -> Cgroup2:
        try:
            with open("/proc/self/mounts") as f:
                mount = _cgroup2_mount(f.read())
            if mount is None:
                return cls(None, reason="no cgroup v2 mount")
            with open(os.path.join(mount, "cgroup.controllers")) as f:
                missing = set(_CONTROLLERS) - set(f.read().split())
            if missing:
                return cls(None, reason=f"cgroup v2 at {mount} lacks controllers {sorted(missing)}")
            if not os.access(mount, os.W_OK):
                return cls(None, reason=f"cgroup v2 at {mount} is not writable")
            parent = os.path.join(mount, name)
            enable = " ".join(f"+{c}" for c in _CONTROLLERS)
            _write(os.path.join(mount, "cgroup.subtree_control"), enable)
            os.makedirs(parent, exist_ok=True)
            _write(os.path.join(parent, "cgroup.subtree_control"), enable)
        except OSError as e:
            return cls(None, reason=f"cannot set up a cgroup v2 parent: {e}")
        return cls(parent)

    def prepare(self, worker_id: str, limits: ResourceLimits) -> str:
        """The cgroup directory the worker must join, or "" for none.  Idempotent."""
        if not (limits.cpus or limits.memory_bytes or limits.pids):
            return ""
        if self.parent is None:
            log.info("worker %s: limits %s not applied (%s)", worker_id, limits, self.reason)
            return ""
        path = os.path.join(self.parent, worker_id)
        try:
            os.makedirs(path, exist_ok=True)
            if limits.memory_bytes:
                _write(os.path.join(path, "memory.max"), str(limits.memory_bytes))
            if limits.cpus:
                _write(os.path.join(path, "cpu.max"), f"{int(limits.cpus * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
            if limits.pids:
                _write(os.path.join(path, "pids.max"), str(limits.pids))
        except OSError as e:
            log.warning("worker %s: limits not applied: cannot write cgroup %s: %s", worker_id, path, e)
            return ""
        return path

    def remove(self, worker_id: str) -> None:
        if self.parent is None:
            return
        # Absent, or still busy: an empty cgroup costs nothing, so leave it.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.parent, worker_id))


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
