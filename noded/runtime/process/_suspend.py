"""Freezing a process-runtime worker: the cgroup v2 freezer, else SIGSTOP.

Every worker joins a cgroup v2 directory where the host has a writable v2
hierarchy (``_cgroup.Cgroup2.prepare``; its limits cgroup if it has limits, a
freeze-only one otherwise, also on hybrid v1+v2 hosts).  ``cgroup.freeze``
stops every task in it, children included, and ``cgroup.events`` says when
they all are.  Where there is no such cgroup the worker's process group gets
SIGSTOP/SIGCONT: a weaker freeze (a child that left the group runs on).
SIGKILL reaches a frozen worker either way, so stopping one needs no thaw.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from noded.runtime._common import vm_rss

__all__ = ["freeze", "rss_bytes", "thaw"]


def _events_frozen(cgroup_dir: str) -> bool:
    with open(os.path.join(cgroup_dir, "cgroup.events")) as f:
        return "frozen 1" in f.read().split("\n")


def freeze(cgroup_dir: str, pgid: int, *, timeout: float = 5.0) -> str:
    """Freeze the worker; how ("cgroup" or "sigstop").  Blocking: run it in a thread."""
    if cgroup_dir:
        with open(os.path.join(cgroup_dir, "cgroup.freeze"), "w") as f:
            f.write("1")
        deadline = time.monotonic() + timeout
        while not _events_frozen(cgroup_dir):  # a task in an uninterruptible sleep holds it up
            if time.monotonic() > deadline:
                thaw("cgroup", cgroup_dir, pgid)
                raise TimeoutError(f"{cgroup_dir} did not freeze within {timeout}s")
            time.sleep(0.005)
        return "cgroup"
    os.killpg(pgid, signal.SIGSTOP)
    return "sigstop"


def thaw(how: str, cgroup_dir: str, pgid: int) -> None:
    if how == "cgroup":
        with open(os.path.join(cgroup_dir, "cgroup.freeze"), "w") as f:
            f.write("0")
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)


def rss_bytes(cgroup_dir: str, pid: int) -> int:
    """Resident memory of the worker: every task of its cgroup, else its main process."""
    if cgroup_dir:
        with contextlib.suppress(OSError), open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            return sum(vm_rss(int(p)) for p in f.read().split())
    return vm_rss(pid)
