"""The node's own credential, kept across restarts.

The coordinator answers a registration with a node token; a join key registers a *new*
host only, so a restarted noded must register again with that token.  It lives in
``<runtime.state-dir>/node-token``, mode 0600, written atomically (a crash mid-write
leaves the old token, never half of one).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["load_token", "save_token"]


def load_token(path: str) -> str:
    """The saved token, or "" when there is none (first start, or no path)."""
    if not path:
        return ""
    with contextlib.suppress(FileNotFoundError):
        return Path(path).read_text().strip()
    return ""


def save_token(path: str, token: str) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)  # an older file of another mode
    os.replace(tmp, target)
