"""Build FlashBoot images: from a state dict (torch tensors or numpy arrays) or from safetensors files.

Packing is split from writing so the same code fills a file (T2) or a shared-memory buffer (T1):
``describe_*`` turns a source into ``(TensorSpec, fill)`` pairs in load order, ``pack`` lays them
out and copies each tensor's bytes once, and ``seal`` hashes the chunks and encodes the header.
Torch is imported only when a torch tensor is actually seen.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import numpy as np

from tide.api.errors import InvalidArgument, NotFound, Unavailable

from .._image import (
    DEFAULT_ALIGN,
    DEFAULT_CHUNK_BYTES,
    ImageIndex,
    TensorEntry,
    TensorSpec,
    compute_chunk_hashes,
    encode_header,
    iter_chunks,
    parse_header,
    plan_layout,
)
from .._io import pread_full, write_file_atomic

__all__ = [
    "BufferSink",
    "FileSink",
    "Layout",
    "TensorSource",
    "convert_safetensors",
    "default_load_order",
    "describe_safetensors",
    "describe_tensors",
    "pack",
    "seal",
    "write_image",
    "write_image_from_buffer",
]

_NUMPY_DTYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "int16": "I16",
    "uint16": "U16",
    "float16": "F16",
    "int32": "I32",
    "uint32": "U32",
    "float32": "F32",
    "int64": "I64",
    "uint64": "U64",
    "float64": "F64",
}


class Sink(Protocol):
    """Where packed bytes go; offsets are relative to the data section."""

    def put(self, offset: int, data: memoryview) -> None: ...
    def put_from_file(self, offset: int, fd: int, src_offset: int, nbytes: int) -> None: ...
    def chunk_hashes(self, data_bytes: int, chunk_bytes: int) -> tuple[str, ...]: ...


# A tensor's bytes arrive through ``fill(sink, offset)`` so sources stay lazy: a CUDA tensor is copied
# to the host, or a file range read, only when its turn comes.
Fill = Callable[[Sink, int], None]


class TensorSource(msgspec.Struct, frozen=True, kw_only=True):
    spec: TensorSpec
    fill: Fill


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    entries: tuple[TensorEntry, ...]
    pads: dict[str, tuple[int, int]]
    data_bytes: int
    align: int


class BufferSink:
    """Packs into a writable buffer holding exactly the data section (a T1 segment)."""

    def __init__(self, view: memoryview, *, threads: int = 4):
        self.view = view
        self._threads = threads

    def put(self, offset: int, data: memoryview) -> None:
        self.view[offset : offset + data.nbytes] = data

    def put_from_file(self, offset: int, fd: int, src_offset: int, nbytes: int) -> None:
        pread_full(fd, self.view[offset : offset + nbytes], src_offset)

    def chunk_hashes(self, data_bytes: int, chunk_bytes: int) -> tuple[str, ...]:
        return compute_chunk_hashes(self.view[:data_bytes], chunk_bytes, threads=self._threads)


class FileSink:
    """Packs into an open file whose data section starts at ``base``."""

    def __init__(self, fd: int, base: int):
        self.fd = fd
        self.base = base

    def put(self, offset: int, data: memoryview) -> None:
        done = 0
        while done < data.nbytes:
            done += os.pwrite(self.fd, data[done:], self.base + offset + done)

    def put_from_file(self, offset: int, fd: int, src_offset: int, nbytes: int) -> None:
        done = 0
        try:
            while done < nbytes:
                n = os.copy_file_range(
                    fd, self.fd, nbytes - done, src_offset + done, self.base + offset + done
                )
                if n == 0:
                    raise InvalidArgument("source safetensors file is shorter than its header says")
                done += n
        except OSError:  # cross-device or unsupported: copy through memory instead
            buf = bytearray(nbytes - done)
            pread_full(fd, memoryview(buf), src_offset + done)
            self.put(offset + done, memoryview(buf))

    def chunk_hashes(self, data_bytes: int, chunk_bytes: int) -> tuple[str, ...]:
        hashes: list[str] = []
        for a, b in iter_chunks(data_bytes, chunk_bytes):
            buf = bytearray(b - a)
            pread_full(self.fd, memoryview(buf), self.base + a)
            hashes.extend(compute_chunk_hashes(memoryview(buf), chunk_bytes, threads=1))
        return tuple(hashes)


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


def default_load_order(names: Iterable[str]) -> list[str]:
    """Execution order guessed from names: embeddings, numbered layers in order, the rest, the head."""

    def key(name: str) -> tuple[int, tuple[tuple[int, int | str], ...]]:
        if re.search(r"embed|wte|wpe", name):
            rank = 0
        elif re.search(r"(^|\.)(lm_head|output)(\.|$)", name):
            rank = 3
        elif re.search(r"\.\d+\.", name):
            rank = 1
        else:
            rank = 2
        return rank, _natural(name)

    return sorted(names, key=key)


def _numpy_source(name: str, array: np.ndarray[Any, Any]) -> TensorSource:
    dtype = _NUMPY_DTYPES.get(array.dtype.name)
    if dtype is None:
        raise InvalidArgument(f"tensor {name!r}: numpy dtype {array.dtype} is not supported")
    spec = TensorSpec(name=name, dtype=dtype, shape=tuple(int(d) for d in array.shape))

    def fill(sink: Sink, offset: int) -> None:
        sink.put(offset, np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)

    return TensorSource(spec=spec, fill=fill)


def _torch_source(name: str, tensor: Any) -> TensorSource:
    from ._torch_bytes import host_bytes, tensor_spec  # only a torch caller pays for importing torch

    spec = tensor_spec(name, tensor)

    def fill(sink: Sink, offset: int) -> None:
        sink.put(offset, host_bytes(tensor))

    return TensorSource(spec=spec, fill=fill)


def describe_tensors(tensors: Mapping[str, Any], *, order: Sequence[str] | None = None) -> list[TensorSource]:
    """Sources for a state dict of torch tensors or numpy arrays, in ``order`` (default: dict order)."""
    names = _ordered(list(tensors), order)
    sources = []
    for name in names:
        value = tensors[name]
        if isinstance(value, np.ndarray):
            sources.append(_numpy_source(name, value))
        elif type(value).__module__.startswith("torch"):
            sources.append(_torch_source(name, value))
        else:
            raise InvalidArgument(
                f"tensor {name!r}: expected a torch.Tensor or numpy array, got {type(value)}"
            )
    return sources


def _ordered(names: list[str], order: Sequence[str] | None) -> list[str]:
    if order is None:
        return names
    known = set(names)
    unknown = [n for n in order if n not in known]
    if unknown:
        raise InvalidArgument(f"order names tensors that do not exist: {unknown[:5]}")
    listed = set(order)
    return list(order) + [n for n in names if n not in listed]


def _read_safetensors_header(path: str) -> tuple[int, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header: dict[str, Any] = msgspec.json.decode(f.read(size))
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such safetensors file") from exc
    except (OSError, struct.error, msgspec.DecodeError) as exc:
        raise InvalidArgument(f"{path}: not a safetensors file: {exc}") from exc
    return 8 + size, header


def describe_safetensors(
    paths: Sequence[str], fds: dict[str, int], *, order: Sequence[str] | None = None
) -> tuple[list[TensorSource], dict[str, str]]:
    """Sources for the tensors of one or more safetensors files (a sharded checkpoint).

    ``fds`` receives one open descriptor per path; the caller closes them after packing.
    Padding tensors of an earlier FlashBoot image are dropped.  Returns the merged metadata too.
    """
    by_name: dict[str, TensorSource] = {}
    metadata: dict[str, str] = {}
    for path in paths:
        base, header = _read_safetensors_header(path)
        metadata.update(
            {k: v for k, v in (header.pop("__metadata__", None) or {}).items() if "flashboot" not in k}
        )
        fds[path] = fd = os.open(path, os.O_RDONLY)
        for name, body in header.items():
            if name.startswith("__pad_"):
                continue
            begin, end = body["data_offsets"]
            spec = TensorSpec(name=name, dtype=body["dtype"], shape=tuple(body["shape"]))
            by_name[name] = TensorSource(spec=spec, fill=_file_fill(fd, base + begin, end - begin))
    names = _ordered(default_load_order(by_name), order)
    return [by_name[n] for n in names], metadata


def _file_fill(fd: int, src_offset: int, nbytes: int) -> Fill:
    def fill(sink: Sink, offset: int) -> None:
        sink.put_from_file(offset, fd, src_offset, nbytes)

    return fill


def pack(sources: Sequence[TensorSource], sink: Sink | None, *, align: int = DEFAULT_ALIGN) -> Layout:
    """Lay the sources out and copy each into ``sink`` (pass None to plan only)."""
    entries, pads, data_bytes = plan_layout([s.spec for s in sources], align=align)
    if sink is not None:
        for source, entry in zip(sources, entries, strict=True):
            if entry.nbytes:
                source.fill(sink, entry.offset)
        for offset, nbytes in pads.values():
            sink.put(offset, memoryview(bytes(nbytes)))
    return Layout(entries=entries, pads=pads, data_bytes=data_bytes, align=align)


def seal(
    layout: Layout,
    sink: Sink,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    metadata: dict[str, str] | None = None,
) -> tuple[bytes, ImageIndex]:
    """Hash the packed data section and return ``(header_bytes, index)``."""
    hashes = sink.chunk_hashes(layout.data_bytes, chunk_bytes)
    header = encode_header(
        layout.entries,
        layout.pads,
        layout.data_bytes,
        chunk_bytes=chunk_bytes,
        chunk_hashes=hashes,
        metadata=metadata,
        align=layout.align,
    )
    return header, parse_header(header)


def _header_size(layout: Layout, chunk_bytes: int, metadata: dict[str, str] | None) -> int:
    # Every hash has a fixed width, so placeholder hashes give the final header's exact size.
    n_chunks = len(iter_chunks(layout.data_bytes, chunk_bytes))
    return len(
        encode_header(
            layout.entries,
            layout.pads,
            layout.data_bytes,
            chunk_bytes=chunk_bytes,
            chunk_hashes=["0" * 32] * n_chunks,
            metadata=metadata,
            align=layout.align,
        )
    )


def _write_sources(
    path: str,
    sources: Sequence[TensorSource],
    *,
    align: int,
    chunk_bytes: int,
    metadata: dict[str, str] | None,
) -> ImageIndex:
    layout = pack(sources, None, align=align)
    base = _header_size(layout, chunk_bytes, metadata)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, base + layout.data_bytes)
        sink = FileSink(fd, base)
        pack(sources, sink, align=align)
        header, index = seal(layout, sink, chunk_bytes=chunk_bytes, metadata=metadata)
        if len(header) != base:
            raise InvalidArgument("internal: header size changed between planning and sealing")
        os.pwrite(fd, header, 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return index


def write_image(
    path: str,
    tensors: Mapping[str, Any],
    *,
    order: Sequence[str] | None = None,
    align: int = DEFAULT_ALIGN,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    metadata: dict[str, str] | None = None,
) -> ImageIndex:
    """Write a state dict (torch tensors or numpy arrays) as a FlashBoot image at ``path``.

    Tensors go in ``order`` (default: the mapping's order, which for ``model.state_dict()`` is
    module order, close to execution order).  Tensors that share storage are written once each.
    """
    try:
        return _write_sources(
            path,
            describe_tensors(tensors, order=order),
            align=align,
            chunk_bytes=chunk_bytes,
            metadata=metadata,
        )
    except OSError as exc:
        raise Unavailable(f"{path}: cannot write image: {exc}") from exc


def convert_safetensors(
    sources: str | Sequence[str],
    path: str,
    *,
    order: Sequence[str] | None = None,
    align: int = DEFAULT_ALIGN,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ImageIndex:
    """Convert one safetensors file, or the shards of one checkpoint, into a FlashBoot image.

    The default order is guessed from tensor names (``default_load_order``), because safetensors
    headers do not keep the writer's order.  Bytes are copied file to file (``copy_file_range``).
    """
    paths = [sources] if isinstance(sources, str) else list(sources)
    fds: dict[str, int] = {}
    try:
        described, metadata = describe_safetensors(paths, fds, order=order)
        return _write_sources(path, described, align=align, chunk_bytes=chunk_bytes, metadata=metadata)
    except OSError as exc:
        raise Unavailable(f"{path}: cannot convert: {exc}") from exc
    finally:
        for fd in fds.values():
            os.close(fd)


def write_image_from_buffer(path: str, header: bytes, data: memoryview) -> int:
    """Write an image whose header and data section are already in memory (T1 -> T2)."""
    return write_file_atomic(path, [header, data])
