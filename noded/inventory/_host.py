"""Host facts for the node inventory: CPUs, memory and disk."""

from __future__ import annotations

import os
import shutil

import msgspec

__all__ = ["HostFacts", "host_facts"]


class HostFacts(msgspec.Struct, frozen=True, kw_only=True):
    cpus: int  # CPUs this process may run on (cpuset/affinity aware)
    memory_bytes: int  # physical memory
    disk_bytes: int  # size of the filesystem holding ``path``
    disk_free_bytes: int = 0


def host_facts(path: str = "/") -> HostFacts:
    """Read the facts now; cheap (a few syscalls).  ``path``: the directory noded keeps data in."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    disk = shutil.disk_usage(path)
    return HostFacts(cpus=cpus, memory_bytes=memory, disk_bytes=disk.total, disk_free_bytes=disk.free)
