"""What backs the T1 directory: RAM or not, and with which page size.  Never imports torch.

A restore maps T1 into the worker: with 4 KiB pages that is 262,144 page-table entries per GiB
(~70 ms/GiB on CPU, and as many pages for ``cudaHostRegister`` to pin), with 2 MiB pages it is 512
(~1 ms/GiB).  A tmpfs gets 2 MiB pages only when mounted with ``huge=always`` or
``huge=within_size`` (or when the kernel forces huge pages on every tmpfs); ``/dev/shm`` is usually
``huge=never``.  ``t1_backing`` reads the mount table so the keeper can say which one it got, and
``t1_advice`` turns a poor setup into one line telling the operator what to mount.
"""

from __future__ import annotations

import os

import msgspec

__all__ = ["T1Backing", "parse_mountinfo", "t1_advice", "t1_backing"]

_RAM_FILESYSTEMS = ("tmpfs", "hugetlbfs", "ramfs")


class T1Backing(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    mount_point: str
    fstype: str
    huge: str = "never"  # tmpfs huge= option in effect: never | always | within_size | advise

    @property
    def in_ram(self) -> bool:
        return self.fstype in _RAM_FILESYSTEMS

    @property
    def huge_pages(self) -> bool:
        if self.fstype == "hugetlbfs":
            return True
        return self.fstype == "tmpfs" and self.huge in ("always", "within_size")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _covers(mount_point: str, path: str) -> bool:
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def parse_mountinfo(text: str, path: str, *, shmem_enabled: str = "") -> T1Backing:
    """The mount holding absolute ``path`` (the last, i.e. topmost, of the longest matches).

    Pure.  ``shmem_enabled`` is /sys/kernel/mm/transparent_hugepage/shmem_enabled (its bracketed
    word wins when it is ``force`` or ``deny``, which override every tmpfs's own option).
    """
    best: tuple[int, str, str, str] | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        mount_point = _unescape(fields[4])
        if not _covers(mount_point, path):
            continue
        if best is None or len(mount_point) >= best[0]:
            best = (len(mount_point), mount_point, rest[0], rest[2])
    if best is None:
        return T1Backing(path=path, mount_point="/", fstype="unknown")
    _, mount_point, fstype, options = best
    huge = "never"
    for opt in options.split(","):
        if opt.startswith("huge="):
            huge = opt.removeprefix("huge=")
    forced = shmem_enabled.partition("[")[2].partition("]")[0]
    if fstype == "tmpfs" and forced in ("force", "deny"):
        huge = "always" if forced == "force" else "never"
    return T1Backing(path=path, mount_point=mount_point, fstype=fstype, huge=huge)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def t1_backing(path: str) -> T1Backing:
    """What backs ``path`` (it may not exist yet: its nearest existing parent is looked up)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    found = parse_mountinfo(
        _read("/proc/self/mountinfo"),
        os.path.realpath(probe),
        shmem_enabled=_read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
    )
    return msgspec.structs.replace(found, path=path)


def t1_advice(b: T1Backing) -> str | None:
    """One line telling the operator how to fix a poor T1 setup; None when it is good."""
    if not b.in_ram:
        return (
            f"FlashBoot T1 dir {b.path} is on {b.fstype} ({b.mount_point}), not in RAM: restores "
            "read from that disk.  Point [flashboot] shm-dir at a tmpfs (see docs/hosts.md)."
        )
    if not b.huge_pages:
        return (
            f"FlashBoot T1 dir {b.path} is on a {b.fstype} with 4 KiB pages ({b.mount_point}, "
            f"huge={b.huge}): every restore maps 262,144 pages per GiB.  Mount a tmpfs with "
            "huge=within_size there for 2 MiB pages (docs/hosts.md; the Ansible noded role does)."
        )
    return None
