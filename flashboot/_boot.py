"""The worker's boot report as a file: where noded asks for it and how noded reads it.  No torch.

The worker writes it (``worker/_boot.py``); noded gives each worker a directory of its own
(``$TIDE_WORKER_REPORT_DIR``) and reads ``boot.json`` there.
"""

from __future__ import annotations

import msgspec

from tide.api.nodes import WorkerBoot

__all__ = ["BOOT_FILE", "ENV_REPORT_DIR", "read_boot"]

ENV_REPORT_DIR = "TIDE_WORKER_REPORT_DIR"
BOOT_FILE = "boot.json"


def read_boot(path: str) -> WorkerBoot | None:
    """noded's side: the report at ``path``, or None if absent or unreadable (being replaced)."""
    try:
        with open(path, "rb") as f:
            return msgspec.json.decode(f.read(), type=WorkerBoot)
    except (OSError, msgspec.DecodeError):
        return None
