"""A small torch model served by an unmodified RunPod handler.

On first start it generates its weights (a seeded 3-layer MLP) into a
safetensors file, then loads them the way real workers load checkpoints.
Input: {"x": [[...16 floats...], ...]}; output: {"y": [[...4 floats...], ...],
"load_s": seconds the weights took to load in this process}.
"""

import itertools
import os
import time
from pathlib import Path

import runpod
import torch
from safetensors.torch import load_file, save_file

DIMS = (16, 256, 256, 4)
WEIGHTS = Path(os.environ.get("TIDE_EXAMPLE_WEIGHTS", "/tmp/tide-examples/torch-mlp.safetensors"))


def _generate(path: Path) -> None:
    g = torch.Generator().manual_seed(7)
    tensors = {}
    for i, (a, b) in enumerate(itertools.pairwise(DIMS)):
        tensors[f"l{i}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        tensors[f"l{i}.bias"] = torch.zeros(b)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def _load() -> tuple[torch.nn.Sequential, float]:
    if not WEIGHTS.exists():
        _generate(WEIGHTS)
    t0 = time.perf_counter()
    state = load_file(str(WEIGHTS))
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(DIMS)):
        linear = torch.nn.Linear(a, b)
        linear.weight.data, linear.bias.data = state[f"l{i}.weight"], state[f"l{i}.bias"]
        layers += [linear, torch.nn.ReLU()] if i < len(DIMS) - 2 else [linear]
    return torch.nn.Sequential(*layers).eval(), time.perf_counter() - t0


MODEL, LOAD_S = _load()


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
        y = MODEL(batch)
    return {"y": y.tolist(), "load_s": round(LOAD_S, 4)}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
