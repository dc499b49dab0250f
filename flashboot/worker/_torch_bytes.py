"""Torch <-> safetensors dtype mapping and byte views of tensors (imports torch: worker side only).

The writer imports this module lazily, for a state dict of torch tensors; nothing here imports the
writer back.
"""

from __future__ import annotations

import numpy as np
import torch

from tide.api.errors import InvalidArgument

from .._image import TensorEntry, TensorSpec

__all__ = ["TORCH_DTYPES", "host_bytes", "tensor_spec", "torch_dtype", "views_of"]

TORCH_DTYPES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.float32: "F32",
    torch.int64: "I64",
    torch.uint64: "U64",
    torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
_BY_NAME = {v: k for k, v in TORCH_DTYPES.items()}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InvalidArgument(f"dtype {name!r} has no torch equivalent") from None


def host_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in host memory (a device tensor is copied to the host first)."""
    flat = tensor.detach().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    flat = flat.contiguous().view(torch.uint8)
    array: np.ndarray[tuple[int], np.dtype[np.uint8]] = flat.numpy()
    return array.data


def tensor_spec(name: str, tensor: torch.Tensor) -> TensorSpec:
    dtype = TORCH_DTYPES.get(tensor.dtype)
    if dtype is None:
        raise InvalidArgument(f"tensor {name!r}: torch dtype {tensor.dtype} is not supported")
    return TensorSpec(name=name, dtype=dtype, shape=tuple(int(d) for d in tensor.shape))


def views_of(flat: torch.Tensor, entries: tuple[TensorEntry, ...]) -> dict[str, torch.Tensor]:
    """Typed views into one flat uint8 buffer (any device); no bytes move."""
    out: dict[str, torch.Tensor] = {}
    for e in entries:
        if e.offset % 16:
            raise InvalidArgument(f"tensor {e.name!r}: offset {e.offset} is not 16-byte aligned")
        out[e.name] = flat[e.offset : e.offset + e.nbytes].view(torch_dtype(e.dtype)).view(e.shape)
    return out
