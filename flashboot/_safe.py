"""Treating a store's files as untrusted: what the keeper (root, on the host) may believe.

An endpoint's workers can write anything in their own store (``host/_owners.py``): its index, links in
place of files or directories, lock files held forever.  The keeper still has to read and move
those files, so it believes only names it can check (fingerprints are 32 hex digits), opens only
regular files and never follows a link, and refuses a store whose directories are not real
directories.  Never imports torch.
"""

from __future__ import annotations

import os
import re
import stat

from tide.api.errors import InvalidArgument

__all__ = ["check_fingerprint", "open_regular", "tree_problem", "valid_fingerprint"]

_FINGERPRINT = re.compile(r"[0-9a-f]{32}")


def valid_fingerprint(fp: str) -> bool:
    return _FINGERPRINT.fullmatch(fp) is not None


def check_fingerprint(fp: str) -> str:
    if not valid_fingerprint(fp):
        raise InvalidArgument(f"{fp[:80]!r} is not a model fingerprint (32 hex digits)")
    return fp


def open_regular(path: str, flags: int) -> int:
    """``os.open`` that refuses links and anything but a regular file (FileNotFoundError passes).
    Non-blocking, so a FIFO planted in place of a file cannot hang the caller in ``open``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InvalidArgument(f"{path}: cannot open ({exc.strerror}); a link is refused") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgument(f"{path}: not a regular file")
    return fd


def tree_problem(dirs: list[str]) -> str:
    """Why these directories cannot be trusted ("" = they can): each must be a real directory,
    not a link to one, wherever it exists."""
    for d in dirs:
        try:
            mode = os.lstat(d).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(mode):
            return f"{d} is a link or not a directory"
    return ""
