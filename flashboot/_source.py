"""Model sources as the worker API accepts them, and the stamp that tells one version from the next.

No torch: the keeper uses ``source_stamp`` to pre-stage an image under the alias a worker will look up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["paths_of", "source_stamp"]


def paths_of(source: object) -> list[str] | None:
    if isinstance(source, str | os.PathLike):
        return [os.fspath(source)]
    if isinstance(source, Sequence) and source and all(isinstance(s, str | os.PathLike) for s in source):
        return [os.fspath(s) for s in source]
    return None


def source_stamp(source: object) -> str:
    """Identifies a file source's version (path, size, mtime); callables are trusted by model_id."""
    paths = paths_of(source)
    if paths is None:
        return ""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)
