"""Host facts for the inventory: CPUs, memory, disk."""

from __future__ import annotations

import os
import shutil

import msgspec

__all__ = ["HostFacts", "host_facts"]


class HostFacts(msgspec.Struct, frozen=True, kw_only=True):
    cpus: int
    memory_bytes: int
    disk_bytes: int


def host_facts(path: str = "/") -> HostFacts:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return HostFacts(cpus=os.cpu_count() or 0, memory_bytes=memory, disk_bytes=shutil.disk_usage(path).total)
