"""The fast worker (issue 17): an injected directory that speeds up the runpod SDK's worker loop.

``INJECT_DIR`` holds ``sitecustomize.py`` and ``tide_fast_worker.py`` (stdlib only,
Python 3.8+).  A runtime puts it first on a worker's PYTHONPATH (``inject_env``);
the worker's interpreter then patches runpod's ``JobScaler`` when it imports it,
if the SDK is the version the patch knows.  The prewarm pool's forked workers
import it the way a fresh interpreter would (``_zygote.run_worker``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["CONTAINER_DIR", "INJECT_DIR", "inject_env", "wanted"]

INJECT_DIR = os.path.dirname(os.path.abspath(__file__))
CONTAINER_DIR = "/opt/tide/fastworker"  # where containers see INJECT_DIR (a read-only bind mount)
_OFF = frozenset({"0", "false", "no", "off"})


def wanted(env: Mapping[str, str], *, node_enabled: bool) -> bool:
    """On unless the node's config or the worker's env (``TIDE_FAST_WORKER=0``) turns it off."""
    return node_enabled and env.get("TIDE_FAST_WORKER", "1").strip().lower() not in _OFF


def inject_env(env: Mapping[str, str], inject_dir: str, *, node_enabled: bool) -> dict[str, str]:
    """Pure: ``env`` with ``inject_dir`` first on PYTHONPATH when the fast worker is wanted."""
    out = dict(env)
    if not wanted(env, node_enabled=node_enabled):
        return out
    rest = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != inject_dir]
    out["PYTHONPATH"] = os.pathsep.join([inject_dir, *rest])
    return out
