"""Read-only MIG dump of this host's GPUs, compared with Tide's shipped catalogs.

    python bench/mig_readonly.py            # diff table per GPU + NVML read latencies
    python bench/mig_readonly.py --all      # every compared field, not only the differences
    python bench/mig_readonly.py --toml     # also print the driver's profiles as catalog TOML

Only reads: it never changes MIG mode, never creates or destroys instances, never resets, so it is
safe on shared GPU hosts (reference/mig.md §7.2, "conformance on hardware, read-only").  Profile
info may need MIG mode on (or field 199, MIG-mode-independent queries); placements do not.
Exits 0 with a message on a host without NVML or GPUs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from a checkout

from mig import (
    Catalog,
    GiProfileInfo,
    GpuDevice,
    MigBackend,
    NvmlMigBackend,
    catalog_for_name,
    load_catalog,
)
from tide.api.errors import TideError, Unavailable

T = TypeVar("T")
_FIELDS = {184: "resetless MIG", 199: "MIG queries with MIG off"}


def _timed(timings: dict[str, list[float]], what: str, fn: Callable[[], T]) -> T:
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        timings.setdefault(what, []).append((time.perf_counter() - t0) * 1e3)


def _fields(uuid: str) -> str:
    """NVML fields 184/199, best effort (pynvml directly: these are not part of MigBackend)."""
    try:
        import pynvml

        values = pynvml.nvmlDeviceGetFieldValues(pynvml.nvmlDeviceGetHandleByUUID(uuid), list(_FIELDS))
        return ", ".join(
            f"{_FIELDS[v.fieldId]}={'n/a' if v.nvmlReturn else bool(v.value.uiVal)}" for v in values
        )
    except Exception as e:  # a field the driver does not know: report, never fail the dump
        return f"fields unreadable ({e})"


def _row(profile: str, field: str, want: object, got: object) -> tuple[str, str, str, str, str]:
    status = "ok" if want == got else ("MISSING" if got is None else ("EXTRA" if want is None else "DIFF"))
    show = lambda v: "-" if v is None else str(v)  # noqa: E731
    return (profile, field, show(want), show(got), status)


def _diff(
    cat: Catalog, profiles: list[GiProfileInfo], placements: dict[int, list[tuple[int, int]]]
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    driver = {p.name: p for p in profiles}
    for want in cat.profiles:
        got = driver.get(want.name)
        mark = want.name + (" (inferred)" if want.inferred else "")
        if got is None and profiles:
            rows.append(_row(mark, "present", "yes", None))
        pairs = [
            ("profile_id", want.profile_id, got and got.profile_id),
            ("enum", want.profile_enum, got and got.profile_enum),
        ]
        pairs += [
            ("memory_mb", want.memory_mb, got and got.memory_mb),
            ("slices", want.compute_slices, got and got.slice_count),
        ]
        pairs += [("max_count", want.max_count, got and got.instance_count)]
        if want.sm_count:
            pairs.append(("sm_count", want.sm_count, got and got.multiprocessor_count))
        for field, w, g in pairs:
            if got is not None:
                rows.append(_row(mark, field, w, g))
        got_pl = placements.get(want.profile_id)
        rows.append(_row(mark, "placements", [(p.start, p.size) for p in want.placements], got_pl))
    rows += [_row(p.name, "present", None, "yes") for p in profiles if not cat.has_profile(p.name)]
    return rows


def _table(rows: list[tuple[str, ...]]) -> str:
    head = ("profile", "field", "catalog", "driver", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows])


def _toml(profiles: list[GiProfileInfo], placements: dict[int, list[tuple[int, int]]]) -> str:
    out = []
    for p in profiles:
        pl = placements.get(p.profile_id, [])
        out.append(
            f'[[profiles]]\nname = "{p.name}"\nprofile_id = {p.profile_id}\nprofile_enum = {p.profile_enum}\n'
            f"memory_mb = {p.memory_mb}\ncompute_slices = {p.slice_count}\nmax_count = {p.instance_count}\n"
            f"placement_size = {pl[0][1] if pl else 0}\nplacement_starts = {[s for s, _ in pl]}\n"
            f"sm_count = {p.multiprocessor_count}\ncopy_engines = {p.copy_engines}\ndecoders = {p.decoders}\n"
            f"encoders = {p.encoders}\njpegs = {p.jpegs}\nofas = {p.ofas}\n"
            f'source = "nvml dump (bench/mig_readonly.py)"\n'
        )
    return "\n".join(out)


def dump_gpu(
    backend: MigBackend, dev: GpuDevice, timings: dict[str, list[float]], toml: bool, show_all: bool
) -> None:
    type_id = catalog_for_name(dev.name)
    print(
        f"\n== GPU {dev.index} {dev.name} ({dev.uuid}), {dev.memory_mb} MiB, type {type_id or 'no catalog'}"
    )
    if not dev.mig_capable:
        print("   not MIG-capable (GetMigMode: NOT_SUPPORTED)")
        return
    mode = _timed(timings, "get_mig_mode", lambda: backend.get_mig_mode(dev.uuid))
    print(f"   MIG current={mode.current} pending={mode.pending}; {_fields(dev.uuid)}")
    try:
        profiles = _timed(timings, "gi_profiles", lambda: backend.gi_profiles(dev.uuid))
    except TideError as e:
        profiles = []
        print(f"   profile info unavailable: {e.message}")
    cat = load_catalog(type_id) if type_id else None
    ids = {p.profile_id for p in profiles} | ({p.profile_id for p in cat.profiles} if cat else set())
    placements: dict[int, list[tuple[int, int]]] = {}
    for pid in sorted(ids):
        try:
            got = _timed(
                timings, "possible_placements", lambda pid=pid: backend.possible_placements(dev.uuid, pid)
            )
            placements[pid] = [(p.start, p.size) for p in got]
        except TideError as e:
            print(f"   placements of profile {pid}: {e.message}")
    if cat is not None:
        rows = _diff(cat, profiles, placements)
        bad = [r for r in rows if r[4] != "ok"]
        print(f"   catalog {cat.type_id}: {len(rows)} fields compared, {len(bad)} differ")
        if bad or show_all:
            print(_table(rows if show_all else bad))
    if mode.current:
        gis = _timed(timings, "list_gpu_instances", lambda: backend.list_gpu_instances(dev.uuid))
        devs = _timed(timings, "list_mig_devices", lambda: backend.list_mig_devices(dev.uuid))
        print(f"   live: {[(g.profile, g.placement.start, g.placement.size) for g in gis]}")
        print(f"   MIG devices: {[(d.index, d.uuid, len(d.pids)) for d in devs]}")
    if toml and profiles:
        print(_toml(profiles, placements))


def main(argv: list[str] | None = None, backend: MigBackend | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toml", action="store_true", help="print the driver's profiles as catalog TOML")
    parser.add_argument("--all", action="store_true", help="show matching fields too, not only differences")
    args = parser.parse_args(argv)
    if backend is None:
        try:
            backend = NvmlMigBackend()
        except Unavailable as e:
            print(f"no NVML on this host ({e.message}): nothing to compare")
            return 0
    gpus = backend.list_gpus()
    if not gpus:
        print("NVML finds no GPU: nothing to compare")
        return 0
    timings: dict[str, list[float]] = {}
    for dev in gpus:
        dump_gpu(backend, dev, timings, args.toml, args.all)
    print(
        "\nNVML read latency (ms): "
        + ", ".join(
            f"{k} p50={sorted(v)[len(v) // 2]:.2f} max={max(v):.2f} (n={len(v)})"
            for k, v in sorted(timings.items())
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
