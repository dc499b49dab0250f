"""The process runtime: workers as plain processes under a shim, with an optional prewarm pool.

``_runtime.py`` is the ``ContainerRuntime``; ``_shim.py`` (the per-worker supervisor) and
``_zygote.py`` (the prewarm pool's fork server) run as scripts by path, stdlib only, beside it;
``_pool.py`` is noded's side of the zygote and ``_cgroup.py`` the cgroup v2 limits.
"""

from noded.runtime.process._pool import DEFAULT_PREWARM_MODULES
from noded.runtime.process._runtime import ProcessRuntime

__all__ = ["DEFAULT_PREWARM_MODULES", "ProcessRuntime"]
