"""A torch model served by an unmodified RunPod handler, its weights loaded through FlashBoot.

On first start it generates its weights (a seeded MLP 16 -> H -> H -> 4, H from
$TIDE_EXAMPLE_MLP_HIDDEN, default 256; 16384 makes a ~1 GiB model) into a safetensors file, then
loads them with ``flashboot.load``: from that file the first time, and on later cold starts of a
``flashboot: true`` endpoint from what the host's FlashBoot keeper kept (shared RAM, else local
disk), bitwise the same.  Without a keeper (flashboot off, or run by hand) ``flashboot.load``
reads the file as safetensors' ``load_file`` would.  One forward pass at start touches every
weight, so the first request does not pay for lazily mapped pages.

Input: {"x": [[...16 floats...], ...]}; output: {"y": [[...4 floats...], ...], "load_s": seconds
the weights took to load in this process, "tier": where they came from}.
"""

import itertools
import os
import time
from pathlib import Path

import runpod
import torch
from safetensors.torch import load_file, save_file

try:
    import flashboot
except ImportError:  # Tide's worker SDK is not installed: load the file directly
    flashboot = None

HIDDEN = int(os.environ.get("TIDE_EXAMPLE_MLP_HIDDEN", "256"))
DIMS = (16, HIDDEN, HIDDEN, 4)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
WEIGHTS = Path(os.environ.get("TIDE_EXAMPLE_WEIGHTS", f"/tmp/tide-examples/torch-mlp-{HIDDEN}.safetensors"))


def _generate(path: Path) -> None:
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for i, (a, b) in enumerate(itertools.pairwise(DIMS)):
        tensors[f"l{i}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        tensors[f"l{i}.bias"] = torch.zeros(b)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")  # two first workers may race: each renames its own
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _load() -> tuple[torch.nn.Sequential, float, str]:
    if not WEIGHTS.exists():
        _generate(WEIGHTS)
    t0 = time.perf_counter()
    if flashboot is not None:
        weights = flashboot.load("torch-mlp", source=str(WEIGHTS), device=DEVICE)
    else:
        weights = load_file(str(WEIGHTS), device=DEVICE)
    load_s = time.perf_counter() - t0
    layers: list[torch.nn.Module] = []
    state = {}
    for i, (a, b) in enumerate(itertools.pairwise(DIMS)):
        layers.append(torch.nn.Linear(a, b, device="meta"))  # no memory: the weights come next
        state[f"{len(layers) - 1}.weight"] = weights[f"l{i}.weight"]
        state[f"{len(layers) - 1}.bias"] = weights[f"l{i}.bias"]
        if i < len(DIMS) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).eval()
    model.load_state_dict(state, assign=True)
    with torch.no_grad():
        model(torch.zeros(1, DIMS[0], device=DEVICE))  # touch every weight now, not in the first request
    stats = flashboot.last_load_stats() if flashboot is not None else None
    return model, load_s, stats.tier if stats else "source"


MODEL, LOAD_S, TIER = _load()


def handler(job):
    x = job["input"].get("x") if isinstance(job["input"], dict) else None
    if not isinstance(x, list) or not x:
        return {"error": f"input.x must be a non-empty list of {DIMS[0]}-float rows"}
    try:
        batch = torch.tensor(x, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        return {"error": f"input.x is not a matrix of numbers: {exc}"}
    if batch.ndim != 2 or batch.shape[1] != DIMS[0]:
        return {"error": f"input.x must have rows of {DIMS[0]} floats, got shape {list(batch.shape)}"}
    with torch.no_grad():
        y = MODEL(batch.to(DEVICE)).cpu()
    return {"y": y.tolist(), "load_s": round(LOAD_S, 4), "tier": TIER}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
