"""The image format: a standard safetensors file with an aligned layout and chunk hashes."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from flashboot import convert_safetensors, read_index, write_image
from flashboot._image import PAGE, TensorSpec, plan_layout
from flashboot.worker._writer import default_load_order
from tide.api.errors import InvalidArgument

from .conftest import numpy_model


def _assert_stock_reader_matches(path: Path, sd: dict[str, np.ndarray]) -> None:
    with safe_open(str(path), framework="np") as f:
        names = set(f.keys())
        assert set(sd) <= names
        assert all(n.startswith("__pad_") for n in names - set(sd))
        for name, value in sd.items():
            got = f.get_tensor(name)
            assert got.dtype == value.dtype and got.shape == value.shape
            assert got.tobytes() == value.tobytes(), name


def test_write_image_is_read_by_stock_safe_open(tmp_path: Path) -> None:
    sd = numpy_model()
    write_image(str(tmp_path / "m.safetensors"), sd)
    _assert_stock_reader_matches(tmp_path / "m.safetensors", sd)


def test_write_image_torch_is_read_by_stock_safe_open(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from .conftest import torch_model

    sd = torch_model()
    write_image(str(tmp_path / "t.safetensors"), sd)
    loaded = load_file(str(tmp_path / "t.safetensors"))
    for name, value in sd.items():
        assert isinstance(value, torch.Tensor)
        assert torch.equal(loaded[name], value) and loaded[name].dtype == value.dtype


def test_image_layout_is_aligned_in_load_order(tmp_path: Path) -> None:
    sd = numpy_model()
    path = tmp_path / "m.safetensors"
    index = write_image(str(path), sd, align=256)
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert index.data_offset == 8 + header_len and index.data_offset % PAGE == 0
    assert index.data_bytes % PAGE == 0 and path.stat().st_size == index.image_bytes
    assert [e.name for e in index.tensors] == list(sd)  # the dict's order is the load order
    offsets = [e.offset for e in index.tensors]
    assert offsets == sorted(offsets) and all(o % 256 == 0 for o in offsets)


def test_chunk_hashes_and_fingerprint_follow_content(tmp_path: Path) -> None:
    sd = numpy_model(layers=8)
    a = write_image(str(tmp_path / "a.safetensors"), sd, chunk_bytes=4096)
    b = write_image(str(tmp_path / "b.safetensors"), dict(sd), chunk_bytes=4096)
    assert len(a.chunk_hashes) == a.data_bytes // 4096 > 1
    assert a.fingerprint == b.fingerprint and a.chunk_hashes == b.chunk_hashes
    changed = dict(sd)
    changed["lm_head.weight"] = sd["lm_head.weight"] + 1
    c = write_image(str(tmp_path / "c.safetensors"), changed, chunk_bytes=4096)
    assert c.fingerprint != a.fingerprint
    assert sum(x != y for x, y in zip(a.chunk_hashes, c.chunk_hashes, strict=True)) >= 1
    assert read_index(str(tmp_path / "c.safetensors")) == c


def test_convert_sharded_safetensors(tmp_path: Path) -> None:
    sd = numpy_model()
    names = list(sd)
    save_file({n: sd[n] for n in names[:5]}, str(tmp_path / "shard1.safetensors"), metadata={"format": "np"})
    save_file({n: sd[n] for n in names[5:]}, str(tmp_path / "shard2.safetensors"))
    out = tmp_path / "img.safetensors"
    index = convert_safetensors(
        [str(tmp_path / "shard1.safetensors"), str(tmp_path / "shard2.safetensors")], str(out)
    )
    _assert_stock_reader_matches(out, sd)
    assert index.metadata["format"] == "np"
    order = [e.name for e in index.tensors]
    assert order[0] == "model.embed_tokens.weight" and order[-1] == "lm_head.weight"
    # Converting an image again gives the same bytes layout and fingerprint.
    again = convert_safetensors(str(out), str(tmp_path / "again.safetensors"))
    assert again.fingerprint == index.fingerprint


def test_default_load_order_is_execution_order() -> None:
    names = [
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.10.w",
        "model.layers.2.w",
        "model.embed.weight",
    ]
    assert default_load_order(names) == [
        "model.embed.weight",
        "model.layers.2.w",
        "model.layers.10.w",
        "model.norm.weight",
        "lm_head.weight",
    ]


def test_plain_safetensors_is_not_an_image(tmp_path: Path) -> None:
    save_file(numpy_model(), str(tmp_path / "plain.safetensors"))
    with pytest.raises(InvalidArgument, match="convert it first"):
        read_index(str(tmp_path / "plain.safetensors"))


def test_layout_rejects_reserved_and_duplicate_names() -> None:
    with pytest.raises(InvalidArgument):
        plan_layout([TensorSpec(name="__pad_0", dtype="U8", shape=(1,))])
    spec = TensorSpec(name="a", dtype="F32", shape=(2,))
    with pytest.raises(InvalidArgument):
        plan_layout([spec, spec])
    with pytest.raises(InvalidArgument):
        plan_layout([TensorSpec(name="c", dtype="C64", shape=(2,))])
