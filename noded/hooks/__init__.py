"""Worker hooks: each concern of a worker's start and stop as a small hook with one job, run by
the worker's runner in the order of ``HOOKS`` (Nomad's task-runner hooks).

``_protocol.py`` holds the phases and their contracts, ``_list.py`` the ordered list,
``_phases.py`` how a runner runs a phase; every other module is one hook.
"""

from noded.hooks._boot_report import BootReportHook
from noded.hooks._bundle import BundleHook
from noded.hooks._flashboot import FlashbootHook
from noded.hooks._gateway import GatewayHook
from noded.hooks._list import HOOKS, worker_hooks
from noded.hooks._model_cache import ModelCacheHook
from noded.hooks._phases import WorkerHooks
from noded.hooks._protocol import (
    Hook,
    HookFactory,
    HookHost,
    Poststart,
    PoststartRequest,
    Precreate,
    Prepare,
    Prestart,
    PrestartRequest,
    PrestartResponse,
    Report,
    Stop,
)
from noded.hooks._report_dir import ReportDirHook

__all__ = [
    "HOOKS",
    "BootReportHook",
    "BundleHook",
    "FlashbootHook",
    "GatewayHook",
    "Hook",
    "HookFactory",
    "HookHost",
    "ModelCacheHook",
    "Poststart",
    "PoststartRequest",
    "Precreate",
    "Prepare",
    "Prestart",
    "PrestartRequest",
    "PrestartResponse",
    "Report",
    "ReportDirHook",
    "Stop",
    "WorkerHooks",
    "worker_hooks",
]
