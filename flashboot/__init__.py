"""FlashBoot: fast restore of model weights across tiers (VRAM <-> shared RAM <-> local disk).

Host side (noded; never imports torch): ``Keeper`` owns the T1 and T2 tiers of one host, enforces
their budgets and reports ``holdings()`` for the placer.  Worker side: ``load`` restores a model from
the nearest tier (torch is imported on first use), ``page_out``/``page_in`` free and restore its
device memory around idle periods, ``last_load_stats`` reports stage timings.  Images are standard
safetensors files (``write_image``, ``convert_safetensors``, ``read_index``).
"""

from ._boot import ENV_REPORT_DIR, read_boot
from ._image import ImageIndex, TensorEntry, read_index
from ._source import source_stamp
from ._stats import LoadStats, StageTiming
from ._store import ENV_DIR, ENV_OWNER
from ._tmpfs import T1Backing, t1_advice
from ._writer import convert_safetensors, write_image
from .host import Holdings, Keeper, KeeperConfig, ModelHolding
from .worker import last_load_stats, load, page_in, page_out, release

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
