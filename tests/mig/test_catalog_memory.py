"""Profile memory in the shipped catalogs never adds up to more than the card has.

A catalog's profile memory must be what ``nvidia-smi mig -lgip`` reports, not the profile name's GB:
the names divide the marketing capacity (H200 1g.18gb = 141 GB / 8) while the driver reports less
(16.00 GiB), so "name GB x 1024" made NVIDIA's own H200 all-balanced and all-3g.71gb layouts sum above
the card.  Checked here for NVIDIA's documented full-card layouts and, exhaustively, for every layout
the placement rules allow (so for every layout the planner can build).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from mig import Catalog, Layout, Slot, list_type_ids, load_catalog, plan_layout
from mig._rules import why_not

# NVIDIA's "all-balanced" layout per card: NVIDIA/gpu-operator assets/state-mig-manager/0400_configmap.yaml
# (default-mig-parted-config, @a22dbf6) and NVIDIA/mig-parted deployments/systemd/config-default.yaml.
ALL_BALANCED: dict[str, dict[str, int]] = {
    "A100-40GB": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
    "A100-80GB": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "H100-80GB": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "H100-94GB": {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1},
    "H200-141GB": {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1},
    "B200-180GB": {"1g.23gb": 2, "2g.45gb": 1, "3g.90gb": 1},
    "B300-269GB": {"1g.34gb": 2, "2g.67gb": 1, "3g.135gb": 1},
    "RTXPRO6000-96GB": {"1g.24gb": 2, "2g.48gb": 1},
}


def documented_layouts(cat: Catalog) -> dict[str, list[str]]:
    """NVIDIA's full-card configs for this card: ``all-<profile>`` (the profile at its instance cap,
    as the same config file writes them) and ``all-balanced``."""
    layouts = {f"all-{p.name}": [p.name] * p.max_count for p in cat.profiles}
    layouts["all-balanced"] = list(Counter(ALL_BALANCED[cat.type_id]).elements())
    return layouts


def legal_layouts(cat: Catalog) -> Iterator[tuple[Slot, ...]]:
    """Every non-empty set of instances the placement rules allow on an empty card (mig._rules.why_not:
    legal starts, no overlap, per-profile caps, compute slices, media engines)."""
    candidates = sorted((pl.start, p.name) for p in cat.profiles for pl in p.placements)

    def grow(live: tuple[Slot, ...], first: int) -> Iterator[tuple[Slot, ...]]:
        for i in range(first, len(candidates)):
            start, name = candidates[i]
            if why_not(cat, live, name, start) is None:
                more = (*live, Slot(profile=name, start=start))
                yield more
                yield from grow(more, i + 1)

    yield from grow((), 0)


def memory(cat: Catalog, profiles: list[str]) -> int:
    return sum(cat.profile(n).memory_mb for n in profiles)


def test_every_card_has_nvidias_balanced_layout() -> None:
    assert sorted(ALL_BALANCED) == sorted(list_type_ids())


@pytest.mark.parametrize("type_id", list_type_ids())
def test_nvidias_documented_layouts_fit_the_card(type_id: str) -> None:
    cat = load_catalog(type_id)
    for name, wanted in documented_layouts(cat).items():
        layout = plan_layout(cat, [], wanted)
        assert isinstance(layout, Layout), f"{type_id} {name}: {layout}"
        used = memory(cat, [s.profile for s in layout.slots])
        assert used <= cat.memory_mb, f"{type_id} {name} needs {used} MiB, the card has {cat.memory_mb}"


@pytest.mark.parametrize("type_id", list_type_ids())
def test_no_legal_layout_holds_more_memory_than_the_card(type_id: str) -> None:
    cat = load_catalog(type_id)
    seen: set[tuple[str, ...]] = set()
    for slots in legal_layouts(cat):
        names = [s.profile for s in slots]
        used = memory(cat, names)
        assert used <= cat.memory_mb, f"{type_id} {sorted(names)} needs {used} MiB of {cat.memory_mb}"
        seen.add(tuple(sorted(names)))
    # The planner builds exactly these: every legal multiset has a plan, and its plan is one of them.
    for names in seen:
        layout = plan_layout(cat, [], list(names))
        assert isinstance(layout, Layout), f"{type_id} {names}: {layout}"
        assert memory(cat, [s.profile for s in layout.slots]) <= cat.memory_mb


@pytest.mark.parametrize("type_id", list_type_ids())
def test_profile_memory_is_not_the_name_times_1024(type_id: str) -> None:
    """The driver always reports less than the name's GB: the regression that overstated H200."""
    cat = load_catalog(type_id)
    for p in cat.profiles:
        named_gb = int(p.name.split(".")[1].split("gb")[0])
        assert p.memory_mb < named_gb * 1024, f"{type_id} {p.name}: {p.memory_mb} MiB"


def test_h200_figures_are_nvidia_smi_lgip() -> None:
    """NVIDIA/mig-parted#120: `nvidia-smi mig -lgip` on an NVIDIA H200 (GiB), NVML memory.total 143771 MiB."""
    cat = load_catalog("H200-141GB")
    assert cat.memory_mb == 143771
    gib = {p.name: p.memory_mb / 1024 for p in cat.profiles}
    assert gib == {
        "1g.18gb": 16.00,
        "1g.18gb+me": 16.00,
        "1g.35gb": 32.25,
        "2g.35gb": 32.25,
        "3g.71gb": 69.50,
        "4g.71gb": 69.50,
        "7g.141gb": 139.75,
    }
    sms = {p.name: p.sm_count for p in cat.profiles}
    assert sms == {
        "1g.18gb": 16,
        "1g.18gb+me": 16,
        "1g.35gb": 26,
        "2g.35gb": 32,
        "3g.71gb": 60,
        "4g.71gb": 64,
        "7g.141gb": 132,
    }
    # The two layouts the old figures broke: all-balanced and all-3g.71gb.
    assert memory(cat, ["1g.18gb", "1g.18gb", "2g.35gb", "3g.71gb"]) == 136960
    assert memory(cat, ["3g.71gb", "3g.71gb"]) == 142336 <= cat.memory_mb
