"""The hooks every worker gets, in order: the one place a new hook is added.

A new concern (network volumes, a model cache) is a module in this package and one
line below; the runner does not change.  See _protocol.py for the phases and their contracts.
"""

from __future__ import annotations

from noded.hooks._boot_report import BootReportHook
from noded.hooks._bundle import BundleHook
from noded.hooks._flashboot import FlashbootHook
from noded.hooks._gateway import GatewayHook
from noded.hooks._model_cache import ModelCacheHook
from noded.hooks._phases import WorkerHooks
from noded.hooks._protocol import HookFactory, HookHost
from noded.hooks._report_dir import ReportDirHook
from tide.api.nodes import DesiredWorker

__all__ = ["HOOKS", "worker_hooks"]

# Every phase runs over the hooks in this order.  Why this one:
# * the gateway first: it rewrites the desired worker's own RUNPOD_WEBHOOK_* URLs, before any
#   hook adds env of its own;
# * the report directory next: it exists before the worker (or any later hook) may write into
#   it, and its env entry and bind come first in the spec;
# * FlashBoot next: the keeper's env and the endpoint's store binds follow the report
#   directory's (the spec a worker gets is the one noded has always built: same env, same
#   mounts in the same order);
# * the model cache after them: its env and read-only bind come after FlashBoot's, and its
#   prepare (the fetch) runs before every start;
# * the code bundle after them: it replaces the image and command (a bundle runs on a base) and
#   adds its own env and read-only binds, which nothing before it reads;
# * the boot report last: it reads what the worker writes into the directory made first.
HOOKS: tuple[HookFactory, ...] = (
    GatewayHook,
    ReportDirHook,
    FlashbootHook,
    ModelCacheHook,
    BundleHook,
    BootReportHook,
)


def worker_hooks(host: HookHost, worker: DesiredWorker) -> WorkerHooks:
    """One worker's own instances of ``HOOKS``."""
    return WorkerHooks([make(host, worker) for make in HOOKS])
