"""cgroup v2 limits for the process runtime, where the host lets us write them.

RLIMIT_AS would count a CUDA process's huge virtual mappings and break torch,
and RLIMIT_NPROC is per user, not per worker, so neither is used.  Limits are
applied only through a writable cgroup v2 hierarchy (``<mount>/tide-workers/<id>``);
elsewhere (cgroup v1 hosts, unprivileged noded) they are skipped with a logged
note.  Production isolation is the containerd runtime's job.

Every worker also gets a cgroup for the freezer (``_suspend.py``), which needs
no controller: its limits cgroup, or a bare ``<mount>/tide-freeze/<id>`` where
limits cannot be set but a v2 hierarchy is writable (hybrid v1+v2 hosts).
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

    def __init__(self, parent: str | None, *, reason: str = "", freeze_parent: str | None = None) -> None:
        self.parent = parent
        self.reason = reason
        self.freeze_parent = freeze_parent or parent

    @classmethod
    def detect(cls, *, name: str = "tide-workers") -> Cgroup2:
        try:
            with open("/proc/self/mounts") as f:
                mount = _cgroup2_mount(f.read())
            if mount is None:
                return cls(None, reason="no cgroup v2 mount")
            if not os.access(mount, os.W_OK):
                return cls(None, reason=f"cgroup v2 at {mount} is not writable")
            with open(os.path.join(mount, "cgroup.controllers")) as f:
                missing = set(_CONTROLLERS) - set(f.read().split())
            if missing:
                reason = f"cgroup v2 at {mount} lacks controllers {sorted(missing)}"
                return cls(None, reason=reason, freeze_parent=_freeze_only(mount))
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
        if not (limits.cpus or limits.memory_bytes or limits.pids) or self.parent is None:
            if limits != ResourceLimits() and self.parent is None:
                log.info("worker %s: limits %s not applied (%s)", worker_id, limits, self.reason)
            return self._freeze_only(worker_id)
        path = os.path.join(self.parent, worker_id)
        try:
            os.makedirs(path, exist_ok=True)
            _thawed(path)
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

    def _freeze_only(self, worker_id: str) -> str:
        if self.freeze_parent is None:
            return ""
        path = os.path.join(self.freeze_parent, worker_id)
        try:
            os.makedirs(path, exist_ok=True)
            _thawed(path)
        except OSError as e:
            log.info("worker %s: no freezer cgroup (%s); suspend uses SIGSTOP", worker_id, e)
            return ""
        return path

    def remove(self, worker_id: str) -> None:
        # Absent, or still busy: an empty cgroup costs nothing, so leave it.
        for parent in {self.parent, self.freeze_parent} - {None}:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(str(parent), worker_id))


def _thawed(path: str) -> None:
    """A worker id's cgroup can outlive its worker still frozen (killed while suspended, and the
    rmdir in ``remove`` failed because a task lingered): a fresh start of that id must not join a
    frozen cgroup, so thaw it first."""
    freeze = os.path.join(path, "cgroup.freeze")
    if os.path.exists(freeze):
        _write(freeze, "0")


def _freeze_only(mount: str, name: str = "tide-freeze") -> str | None:
    """A parent for controller-less freezer cgroups on this v2 mount, or None."""
    path = os.path.join(mount, name)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)
