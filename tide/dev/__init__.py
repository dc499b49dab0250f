"""``tide dev``: a whole Tide cluster in one process, for laptops, demos and tests.

It runs the coordinator (in-process store, or ``--etcd``) and N node agents
with simulated GPUs and the process runtime (or real containers with
``--runtime containerd``): the same code paths as production, wired together
in one event loop (the only place where both daemons meet).  Ctrl-C stops the
agents and the coordinator, then the workers.

Top floor of ``tide``: it imports the daemons through their packages' public
names, and nothing below it imports it (pyproject.toml's import-linter contracts).
"""

from tide.dev._cluster import PREWARM, DevCluster, prewarm_modules
from tide.dev._command import main, parser

__all__ = ["PREWARM", "DevCluster", "main", "parser", "prewarm_modules"]
