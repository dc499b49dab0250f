"""FlashBoot: fast restore of model weights across tiers (VRAM <-> shared RAM <-> local disk).

Host side (``host/``, run by noded; never imports torch): ``Keeper`` owns the T1 and T2 tiers of
one host, enforces their budgets and reports ``holdings()`` for the placer.  Worker side
(``worker/``, inside the worker; never imports the host side): ``load`` restores a model from the
nearest tier (torch is imported on first use), ``page_out``/``page_in`` free and restore its device
memory around idle periods, ``last_load_stats`` reports stage timings.  Images are standard
safetensors files (``write_image``, ``convert_safetensors``, ``read_index``).  What both sides share
sits at the root: the image format (``_image.py``), the store's directory layout (``_store.py``,
``_segment.py``, ``_registry.py``, ``_pool.py``), locks, I/O and safe file opening, the eviction
planner (``_plan.py``), the T1 mount check (``_tmpfs.py``) and the boot report's file (``_boot.py``).
"""

from ._boot import ENV_REPORT_DIR, read_boot
from ._image import ImageIndex, TensorEntry, read_index
from ._source import source_stamp
from ._store import ENV_DIR, ENV_OWNER
from ._tmpfs import T1Backing, t1_advice
from .host import Holdings, Keeper, KeeperConfig, ModelHolding
from .worker import (
    LoadStats,
    StageTiming,
    convert_safetensors,
    last_load_stats,
    load,
    page_in,
    page_out,
    release,
    write_image,
)

__all__ = [
    "ENV_DIR",
    "ENV_OWNER",
    "ENV_REPORT_DIR",
    "Holdings",
    "ImageIndex",
    "Keeper",
    "KeeperConfig",
    "LoadStats",
    "ModelHolding",
    "StageTiming",
    "T1Backing",
    "TensorEntry",
    "convert_safetensors",
    "last_load_stats",
    "load",
    "page_in",
    "page_out",
    "read_boot",
    "read_index",
    "release",
    "source_stamp",
    "t1_advice",
    "write_image",
]
