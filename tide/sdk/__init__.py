"""Tide's Python SDK: ``tide.App`` and its decorated functions, and the code bundles ``tide deploy``
uploads.  Small dependencies only (msgspec; runpod inside workers), never torch.

``WORKER_SCRIPT`` is the worker loop noded runs a bundle under (``_worker.py``, by path).
"""

from pathlib import Path

from tide.sdk._app import App, Function, OptionError, check_options, input_for
from tide.sdk._bundle import MAX_BUNDLE_BYTES, Bundle, bundle_files, pack
from tide.sdk._worker import PREFLIGHT_KEY

__all__ = [
    "MAX_BUNDLE_BYTES",
    "PREFLIGHT_KEY",
    "WORKER_SCRIPT",
    "App",
    "Bundle",
    "Function",
    "OptionError",
    "bundle_files",
    "check_options",
    "input_for",
    "pack",
]

WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
