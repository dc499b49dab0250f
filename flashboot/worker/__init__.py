"""FlashBoot's worker side, run inside the worker: restore a model's weights from the nearest tier.

Use it from a handler process (a runpod handler works unchanged)::

    import flashboot

    weights = flashboot.load("llama-8b", source="/models/llama.safetensors")   # or a callable
    model.load_state_dict(weights, assign=True)
    print(flashboot.last_load_stats())

With ``$TIDE_FLASHBOOT_DIR`` set (noded sets it from ``Keeper.env()``), ``load`` restores from T1
(shared RAM), else T2 (the host's image on disk), else the source, and leaves T1 filled for the
next worker.  Without it, ``load`` just loads the source.  The returned tensors are views into one
flat device buffer.  On CUDA, ``page_out`` frees that buffer (T1 keeps the bytes) and ``page_in``
brings it back under the same tensor objects.  On CPU the views map T1 copy-on-write: nothing is
copied and nothing needs paging.  Images are built here too (``write_image``,
``convert_safetensors``): a worker packs a source it loads the same way.

Importing this module does not import torch; the first ``load`` does.  Calls are serialised per
process (one lock), and ``load`` of a model this process already holds returns the same views.
Nothing here imports the host side (``flashboot.host``): a worker reaches the keeper only through
its store's files (``flashboot/_store.py``).
"""

from ._api import last_load_stats, load, page_in, page_out, release
from ._stats import LoadStats, StageTiming
from ._writer import convert_safetensors, write_image

__all__ = [
    "LoadStats",
    "StageTiming",
    "convert_safetensors",
    "last_load_stats",
    "load",
    "page_in",
    "page_out",
    "release",
    "write_image",
]
