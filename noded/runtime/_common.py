"""Pieces both runtimes share: id validation, the base environment, device env, log tails."""

from __future__ import annotations

import os
import re

from tide.api.errors import InvalidArgument

# A worker id names a directory, a containerd container and a cgroup: keep it to a safe alphabet.
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# What a worker gets before the spec's env: enough for a shell and Python to behave.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

# The spec's labels are read back by list(); these keys are the ones noded uses.
OWNER_LABELS = ("tide.owner", "tide.endpoint", "tide.worker", "tide.revision")


def check_worker_id(worker_id: str) -> None:
    if not _WORKER_ID.match(worker_id):
        raise InvalidArgument(
            f"worker id {worker_id!r} is not valid: use 1-128 characters of [A-Za-z0-9_.-], "
            "starting with a letter or digit"
        )


def device_env(devices: list[str]) -> dict[str, str]:
    """The GPU visibility variables for the assigned GPU/MIG UUIDs.

    They are applied after the spec's env, so an endpoint's env cannot widen what
    a worker sees.  With no devices CUDA sees none ("") and NVIDIA's container
    tooling does nothing ("void").
    """
    joined = ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": joined, "NVIDIA_VISIBLE_DEVICES": joined or "void"}


def tail_lines(path: str, n: int, *, block: int = 65536) -> list[str]:
    """The last ``n`` lines of a file, reading backwards so large logs stay cheap."""
    if n <= 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the file may not exist
    except FileNotFoundError:
        return []
    with f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


def vm_rss(pid: int) -> int:
    """Resident memory of one process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
