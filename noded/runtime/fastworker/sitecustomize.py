"""Tide's injected ``sitecustomize``: the fast worker's import hook, then the image's own.

This directory is put first on a worker's PYTHONPATH (read-only in containers),
so the interpreter imports this file at start.  It installs the hook of
``tide_fast_worker`` (which only acts if the worker imports the runpod SDK) and
then runs the ``sitecustomize`` the worker would have had without us, so an
image's or distribution's own still runs.
"""

from __future__ import annotations

import os
import sys


def _chain() -> None:
    """Import the next ``sitecustomize`` on sys.path, the one site.py would have found without us."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != here]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        __import__("sitecustomize")
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        if ours is not None:
            sys.modules["sitecustomize"] = ours
    finally:
        sys.path[:] = saved


if __name__ == "sitecustomize":  # as the interpreter's sitecustomize, not imported as a package module
    try:
        import tide_fast_worker  # type: ignore[import-not-found]

        tide_fast_worker.install()
    except Exception as exc:  # never stop an interpreter from starting
        print(f"tide fast worker: not installed ({type(exc).__name__}: {exc})", file=sys.stderr)
    _chain()
