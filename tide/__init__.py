"""tide: the ground floor and the roof of the other packages, and the SDK's front door.

Bottom, imported by every process and importing nothing else of ours:
``tide.api`` (wire types) and ``tide.daemon`` (the daemons' config file loader
and sd_notify).  Top, importing anything and imported by nothing:
``tide.cli`` (the ``tide`` command) and ``tide.dev`` (the all-in-one cluster).
pyproject.toml's import-linter contracts keep it so.

``import tide; app = tide.App("hello")`` reaches ``tide.sdk`` lazily (PEP 562), so the daemons,
which import ``tide.api``, never load the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tide.sdk import App, Function, OptionError

__all__ = ["App", "Function", "OptionError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import tide.sdk

        return getattr(tide.sdk, name)
    raise AttributeError(f"module 'tide' has no attribute {name!r}")
