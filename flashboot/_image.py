"""The FlashBoot weight image: a standard safetensors file laid out for fast restores.

Layout (every offset below is from the start of the data section)::

    [8-byte header length N][JSON header, space-padded so 8 + N is a multiple of 4096]
    [tensor 0][__pad_0][tensor 1][__pad_1] ... [__pad_k]     <- data section, 4 KiB-aligned, 4 KiB-long

- Tensors appear in *load order* (the order given by the caller, by default the state dict's), each at
  an offset aligned to ``align`` bytes (256 by default) so device views need no realignment.
- Safetensors forbids holes in the data section, so alignment gaps are explicit ``U8`` tensors named
  ``__pad_<i>``; readers other than FlashBoot see them as ordinary (zero) tensors.
- The data section is padded to a multiple of 4096 bytes, so every chunk of it can be read with
  ``O_DIRECT`` and the same offsets serve the T1 host buffer and the T0 device buffer.
- ``__metadata__`` holds ``flashboot.chunk_sha256`` (a truncated SHA-256 per ``chunk_bytes`` chunk of
  the data section) and ``flashboot.fingerprint``: a content hash of the tensor table and the chunk
  hashes, so identical weights get the same fingerprint wherever and whenever they were written.

This module is pure byte layout and parsing: it never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from math import prod

import msgspec

from tide.api.errors import InvalidArgument, NotFound

__all__ = [
    "DEFAULT_ALIGN",
    "DEFAULT_CHUNK_BYTES",
    "DTYPE_SIZES",
    "PAD_PREFIX",
    "PAGE",
    "ImageIndex",
    "TensorEntry",
    "TensorSpec",
    "compute_chunk_hashes",
    "compute_fingerprint",
    "encode_header",
    "iter_chunks",
    "parse_header",
    "plan_layout",
    "read_index",
]

PAGE = 4096
DEFAULT_ALIGN = 256
DEFAULT_CHUNK_BYTES = 64 << 20
PAD_PREFIX = "__pad_"
FORMAT_VERSION = "1"
_MAX_HEADER = 100_000_000  # safetensors' own limit

# Element sizes of the safetensors dtypes FlashBoot carries.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the layout planner needs to know about one tensor."""

    name: str
    dtype: str  # a safetensors dtype, e.g. "BF16"
    shape: tuple[int, ...]


class TensorEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One real (non-padding) tensor of an image; ``offset`` is relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class ImageIndex(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a tier needs to place an image's bytes, derived from its header alone."""

    data_offset: int  # 8 + header length: where the data section starts in the file (4 KiB-aligned)
    data_bytes: int  # length of the data section (a multiple of 4096)
    chunk_bytes: int
    chunk_hashes: tuple[str, ...]
    fingerprint: str
    tensors: tuple[TensorEntry, ...]  # load order, padding excluded
    metadata: dict[str, str] = {}  # the caller's own __metadata__ entries

    @property
    def image_bytes(self) -> int:
        return self.data_offset + self.data_bytes


def _spec_nbytes(spec: TensorSpec) -> int:
    size = DTYPE_SIZES.get(spec.dtype)
    if size is None:
        raise InvalidArgument(f"tensor {spec.name!r}: dtype {spec.dtype!r} is not supported by FlashBoot")
    if any(d < 0 for d in spec.shape):
        raise InvalidArgument(f"tensor {spec.name!r}: negative dimension in shape {spec.shape}")
    return size * prod(spec.shape)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_layout(
    specs: Sequence[TensorSpec], *, align: int = DEFAULT_ALIGN
) -> tuple[tuple[TensorEntry, ...], dict[str, tuple[int, int]], int]:
    """Place tensors in the given order at ``align``-aligned offsets.

    Returns ``(entries, pads, data_bytes)``: pads maps each padding tensor's name to its
    ``(offset, nbytes)``; the data section is rounded up to a whole page.  Pure.
    """
    if align <= 0 or PAGE % align:
        raise InvalidArgument(f"align must divide {PAGE}, got {align}")
    entries: list[TensorEntry] = []
    pads: dict[str, tuple[int, int]] = {}
    seen: set[str] = set()
    cursor = 0
    for spec in specs:
        if spec.name.startswith(PAD_PREFIX) or spec.name == "__metadata__":
            raise InvalidArgument(f"tensor name {spec.name!r} is reserved by the image format")
        if spec.name in seen:
            raise InvalidArgument(f"tensor name {spec.name!r} appears twice")
        seen.add(spec.name)
        aligned = _round_up(cursor, align)
        if aligned > cursor:
            pads[f"{PAD_PREFIX}{len(pads)}"] = (cursor, aligned - cursor)
        nbytes = _spec_nbytes(spec)
        entries.append(
            TensorEntry(name=spec.name, dtype=spec.dtype, shape=spec.shape, offset=aligned, nbytes=nbytes)
        )
        cursor = aligned + nbytes
    data_bytes = max(_round_up(cursor, PAGE), PAGE)
    if data_bytes > cursor:
        pads[f"{PAD_PREFIX}{len(pads)}"] = (cursor, data_bytes - cursor)
    return tuple(entries), pads, data_bytes


def iter_chunks(total: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Split ``[0, total)`` into ``(start, end)`` chunks of ``chunk_bytes`` (the last may be shorter)."""
    if chunk_bytes <= 0:
        raise InvalidArgument("chunk_bytes must be positive")
    return [(start, min(start + chunk_bytes, total)) for start in range(0, total, chunk_bytes)]


def _hash_one(view: memoryview) -> str:
    # hashlib releases the GIL on large buffers, so a thread pool hashes chunks in parallel.
    return hashlib.sha256(view).hexdigest()[:32]


def compute_chunk_hashes(data: memoryview, chunk_bytes: int, *, threads: int = 4) -> tuple[str, ...]:
    """Hash each ``chunk_bytes`` chunk of a data section held in memory."""
    ranges = iter_chunks(len(data), chunk_bytes)
    if len(ranges) <= 1 or threads <= 1:
        return tuple(_hash_one(data[a:b]) for a, b in ranges)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return tuple(pool.map(lambda r: _hash_one(data[r[0] : r[1]]), ranges))


def compute_fingerprint(
    entries: Sequence[TensorEntry], data_bytes: int, chunk_bytes: int, chunk_hashes: Sequence[str]
) -> str:
    """A content fingerprint: same tensors, layout and bytes give the same value.  Pure."""
    table = [[e.name, e.dtype, list(e.shape), e.offset, e.nbytes] for e in entries]
    blob = msgspec.json.encode([FORMAT_VERSION, table, data_bytes, chunk_bytes, list(chunk_hashes)])
    return hashlib.sha256(blob).hexdigest()[:32]


def encode_header(
    entries: Sequence[TensorEntry],
    pads: dict[str, tuple[int, int]],
    data_bytes: int,
    *,
    chunk_bytes: int,
    chunk_hashes: Sequence[str],
    metadata: dict[str, str] | None = None,
    align: int = DEFAULT_ALIGN,
) -> bytes:
    """The image's first ``data_offset`` bytes: length prefix plus the space-padded JSON header."""
    meta = {"format": "pt", **(metadata or {})}
    meta.update(
        {
            "flashboot.format": FORMAT_VERSION,
            "flashboot.align": str(align),
            "flashboot.data_bytes": str(data_bytes),
            "flashboot.chunk_bytes": str(chunk_bytes),
            "flashboot.chunk_sha256": ",".join(chunk_hashes),
            "flashboot.fingerprint": compute_fingerprint(entries, data_bytes, chunk_bytes, chunk_hashes),
        }
    )
    rows: list[tuple[int, int, str, str, list[int]]] = [
        (e.offset, e.offset + e.nbytes, e.name, e.dtype, list(e.shape)) for e in entries
    ]
    rows += [(off, off + n, name, "U8", [n]) for name, (off, n) in pads.items()]
    header: dict[str, object] = {"__metadata__": meta}
    for begin, end, name, dtype, shape in sorted(rows):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    raw = msgspec.json.encode(header)
    total = _round_up(8 + len(raw), PAGE)
    padded = raw + b" " * (total - 8 - len(raw))
    return struct.pack("<Q", len(padded)) + padded


def _entry_from_json(name: str, body: dict[str, object]) -> TensorEntry:
    try:
        dtype = str(body["dtype"])
        shape = tuple(int(d) for d in body["shape"])  # type: ignore[attr-defined]
        begin, end = (int(x) for x in body["data_offsets"])  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"tensor {name!r}: malformed header entry") from exc
    entry = TensorEntry(name=name, dtype=dtype, shape=shape, offset=begin, nbytes=end - begin)
    if name.startswith(PAD_PREFIX):
        return entry
    if _spec_nbytes(TensorSpec(name=name, dtype=dtype, shape=shape)) != entry.nbytes:
        raise InvalidArgument(f"tensor {name!r}: data_offsets disagree with dtype and shape")
    return entry


def parse_header(raw: bytes) -> ImageIndex:
    """Parse an image's leading bytes (at least the whole header) into its index.

    Raises InvalidArgument when the bytes are not a FlashBoot image (a plain safetensors file
    has no ``flashboot.*`` metadata: convert it first).
    """
    if len(raw) < 8:
        raise InvalidArgument("not a safetensors file: shorter than 8 bytes")
    (size,) = struct.unpack("<Q", raw[:8])
    if size > _MAX_HEADER or len(raw) < 8 + size:
        raise InvalidArgument("not a safetensors file: bad header length")
    try:
        header = json.loads(raw[8 : 8 + size])
    except ValueError as exc:
        raise InvalidArgument("not a safetensors file: header is not JSON") from exc
    meta: dict[str, str] = header.pop("__metadata__", None) or {}
    if meta.get("flashboot.format") != FORMAT_VERSION:
        raise InvalidArgument("not a FlashBoot image (no flashboot.format metadata); convert it first")
    all_entries = sorted(
        (_entry_from_json(n, b) for n, b in header.items()), key=lambda e: (e.offset, e.nbytes)
    )
    data_bytes = int(meta["flashboot.data_bytes"])
    cursor = 0
    for e in all_entries:
        if e.offset != cursor:
            raise InvalidArgument(f"tensor {e.name!r}: data section has a hole or overlap at {cursor}")
        cursor = e.offset + e.nbytes
    if cursor != data_bytes or (8 + size) % PAGE or data_bytes % PAGE:
        raise InvalidArgument("FlashBoot image: data section is not page-aligned and page-sized")
    hashes = tuple(h for h in meta["flashboot.chunk_sha256"].split(",") if h)
    entries = tuple(e for e in all_entries if not e.name.startswith(PAD_PREFIX))
    chunk_bytes = int(meta["flashboot.chunk_bytes"])
    fingerprint = meta["flashboot.fingerprint"]
    if compute_fingerprint(entries, data_bytes, chunk_bytes, hashes) != fingerprint:
        raise InvalidArgument("FlashBoot image: fingerprint does not match its header")
    user_meta = {k: v for k, v in meta.items() if not k.startswith("flashboot.")}
    return ImageIndex(
        data_offset=8 + size,
        data_bytes=data_bytes,
        chunk_bytes=chunk_bytes,
        chunk_hashes=hashes,
        fingerprint=fingerprint,
        tensors=entries,
        metadata=user_meta,
    )


def read_index(path: str) -> ImageIndex:
    """Read and validate an image file's header (one or two small reads)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise InvalidArgument(f"{path}: not a safetensors file")
            (size,) = struct.unpack("<Q", prefix)
            if size > _MAX_HEADER:
                raise InvalidArgument(f"{path}: header length {size} is over the safetensors limit")
            raw = prefix + f.read(size)
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such image") from exc
    return parse_header(raw)
