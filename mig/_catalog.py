"""Per-SKU MIG profile catalogs: data files in mig/catalogs/, loaded into frozen Structs.

A catalog is what `nvidia-smi mig -lgip` and `-lgipp` print for one SKU: every GPU-instance
profile with its NVML profile enum (the index passed to ``nvmlDeviceGetGpuInstanceProfileInfo``)
and profile ID (what create, placements and listings use), memory, compute slices, the driver's
per-profile cap, and the legal placements ``(start, size)`` on the card's memory-unit grid (8
units on A100/H100/H200/B200/B300, 12 on RTX PRO 6000).  Entries no source states carry
``inferred=True``; bench/mig_readonly.py compares a catalog with a live card.  Profile memory is
what the driver reports (``-lgip``), never the profile name's GB: the names overstate it.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import tomllib

import msgspec

from tide.api.errors import InvalidArgument, NotFound

__all__ = [
    "Catalog",
    "EngineBudget",
    "Placement",
    "Profile",
    "catalog_for_name",
    "list_type_ids",
    "load_catalog",
]


class Placement(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """A GPU instance's memory units ``[start, start + size)``."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # "3g.40gb", "1g.10gb+me", "1g.24gb-me"
    profile_id: int  # NVML profile ID: create, placements, listings, `nvidia-smi -cgi`
    profile_enum: int  # NVML_GPU_INSTANCE_PROFILE_* index: only for GetGpuInstanceProfileInfo
    memory_mb: int
    compute_slices: int
    max_count: int  # the driver's instanceCount for this profile
    placements: tuple[Placement, ...]
    sm_count: int = 0  # 0 = not recorded; read it from NVML, it drifts by driver
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    inferred: bool = False
    source: str = ""

    @property
    def size(self) -> int:
        """Memory units one instance of this profile occupies."""
        return self.placements[0].size

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(p.start for p in self.placements)

    def engines(self) -> dict[str, int]:
        return {
            "decoders": self.decoders,
            "encoders": self.encoders,
            "jpegs": self.jpegs,
            "ofas": self.ofas,
        }


class EngineBudget(msgspec.Struct, frozen=True, kw_only=True):
    """Card-wide media-engine totals that live instances share; None = not limited."""

    decoders: int | None = None
    encoders: int | None = None
    jpegs: int | None = None
    ofas: int | None = None
    inferred: bool = False
    source: str = ""

    def limits(self) -> dict[str, int]:
        pairs = {"decoders": self.decoders, "encoders": self.encoders, "jpegs": self.jpegs, "ofas": self.ofas}
        return {k: v for k, v in pairs.items() if v is not None}


class Catalog(msgspec.Struct, frozen=True, kw_only=True):
    type_id: str  # Tide's canonical GPU type, e.g. "H100-80GB"
    architecture: str  # "ampere" | "hopper" | "blackwell"
    nvml_names: tuple[str, ...]  # device names as nvmlDeviceGetName reports them
    memory_mb: int  # whole card
    grid: int  # memory units: 8 or 12
    compute_slices: int  # 7 or 4
    max_mig_devices: int
    resetless: bool  # Hopper+: mode change needs no GPU reset, and is lost on reboot
    driver: str
    source: str
    engine_budget: EngineBudget
    profiles: tuple[Profile, ...]

    def profile(self, name: str) -> Profile:
        """The profile called ``name``; InvalidArgument if this SKU has none."""
        for p in self.profiles:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.profiles)
        raise InvalidArgument(f"{self.type_id} has no MIG profile {name!r} (known: {known})")

    def profile_by_id(self, profile_id: int) -> Profile:
        for p in self.profiles:
            if p.profile_id == profile_id:
                return p
        raise InvalidArgument(f"{self.type_id} has no MIG profile with ID {profile_id}")

    def has_profile(self, name: str) -> bool:
        return any(p.name == name for p in self.profiles)


class _ProfileFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    profile_id: int
    profile_enum: int
    memory_mb: int
    compute_slices: int
    max_count: int
    placement_size: int
    placement_starts: list[int]
    sm_count: int = 0
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    inferred: bool = False
    source: str


class _CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type_id: str
    architecture: str
    nvml_names: list[str]
    memory_mb: int
    grid: int
    compute_slices: int
    max_mig_devices: int
    resetless: bool
    driver: str = ""
    source: str
    engine_budget: EngineBudget = EngineBudget()
    profiles: list[_ProfileFile]


def _profile(f: _ProfileFile, grid: int, type_id: str) -> Profile:
    placements = tuple(Placement(start=s, size=f.placement_size) for s in f.placement_starts)
    if not placements or any(p.start < 0 or p.end > grid for p in placements):
        raise InvalidArgument(f"catalog {type_id}: {f.name} has placements outside the {grid}-unit grid")
    fields = msgspec.structs.asdict(f)
    del fields["placement_size"], fields["placement_starts"]
    return Profile(placements=placements, **fields)


def _decode(type_id: str, data: bytes) -> Catalog:
    try:
        raw = msgspec.convert(tomllib.loads(data.decode()), _CatalogFile)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as e:
        raise InvalidArgument(f"catalog {type_id} is malformed: {e}") from e
    if raw.type_id != type_id:
        raise InvalidArgument(f"catalog file {type_id}.toml declares type_id {raw.type_id!r}")
    fields = msgspec.structs.asdict(raw)
    fields["nvml_names"] = tuple(raw.nvml_names)
    fields["profiles"] = tuple(_profile(p, raw.grid, type_id) for p in raw.profiles)
    return Catalog(**fields)


def _catalog_dir() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("mig.catalogs")


@functools.cache
def list_type_ids() -> tuple[str, ...]:
    """Every GPU type that ships a catalog, sorted."""
    names = (e.name for e in _catalog_dir().iterdir() if e.name.endswith(".toml"))
    return tuple(sorted(n.removesuffix(".toml") for n in names))


@functools.cache
def load_catalog(type_id: str) -> Catalog:
    """The catalog for a canonical type id such as ``"H100-80GB"``; NotFound if none ships."""
    if type_id not in list_type_ids():
        raise NotFound(f"no MIG catalog for GPU type {type_id!r} (known: {', '.join(list_type_ids())})")
    return _decode(type_id, _catalog_dir().joinpath(f"{type_id}.toml").read_bytes())


def _normalize(name: str) -> str:
    # NVML names vary in case, hyphens and the "NVIDIA " prefix across drivers ("A100-SXM4-40GB").
    words = re.split(r"[\s\-_]+", name.strip().lower())
    return " ".join(w for w in words if w and w != "nvidia")


@functools.cache
def _names() -> dict[str, str]:
    return {_normalize(n): t for t in list_type_ids() for n in load_catalog(t).nvml_names}


def catalog_for_name(nvml_name: str) -> str | None:
    """Map an NVML device name (``"NVIDIA H100 80GB HBM3"``) to Tide's type id, or None if unknown.

    None means no shipped MIG catalog knows the card: treat it as a whole GPU only.
    """
    return _names().get(_normalize(nvml_name))
