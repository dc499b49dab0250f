"""Policies: ``dynamic`` (the leader's on-demand and ahead-of-time re-cuts), ``static:<layout>``
(every MIG-pool card cut once into a named layout, never re-cut: mig-parted practice) and
``whole`` (no MIG: every card handed out whole, MIG asks mapped to whole cards)."""

from __future__ import annotations

import itertools
import re
from typing import Literal

import msgspec

from coordinator.scheduling import catalog_of, parse_gpu_type_id
from simulate._inputs import Fleet
from simulate._layouts import named_layouts
from tide.api.errors import InvalidArgument

__all__ = ["Policy", "parse_policy", "serves", "static_candidates", "whole_entries"]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["dynamic", "static", "whole"]
    layouts: dict[str, str] = {}  # static: card type -> layout name

    @property
    def label(self) -> str:
        if self.kind != "static":
            return self.kind
        names = set(self.layouts.values())
        if len(names) == 1:
            return f"static:{names.pop()}"
        return "static:" + ",".join(f"{t}={n}" for t, n in sorted(self.layouts.items()))


def _allowed(fleet: Fleet) -> str:
    return "; ".join(f"{t}: {', '.join(named_layouts(t))}" for t in fleet.mig_types)


def parse_policy(text: str, fleet: Fleet) -> Policy:
    """``dynamic``, ``whole``, ``static:NAME`` or ``static:TYPE=NAME,TYPE=NAME``."""
    if text in ("dynamic", "whole"):
        return Policy(kind=text)  # type: ignore[arg-type]
    if not text.startswith("static:"):
        raise InvalidArgument(f"unknown policy {text!r}: dynamic, whole, best-static or static:<layout>")
    spec = text.removeprefix("static:")
    if "=" not in spec:
        layouts = dict.fromkeys(fleet.mig_types, spec)
    else:
        pairs = [p.split("=", 1) for p in spec.split(",")]
        layouts = {parse_gpu_type_id(t).type_id: n.strip() for t, n in pairs}
    for type_id in fleet.mig_types:
        name = layouts.get(type_id)
        if name is None:
            raise InvalidArgument(
                f"policy {text!r} names no layout for {type_id}; layouts: {_allowed(fleet)}"
            )
        if name not in named_layouts(type_id):
            raise InvalidArgument(f"{type_id} has no layout {name!r}; layouts: {_allowed(fleet)}")
    return Policy(kind="static", layouts={t: layouts[t] for t in fleet.mig_types})


def static_candidates(fleet: Fleet) -> list[Policy]:
    """Every combination of one named layout per MIG card type of the fleet."""
    types = fleet.mig_types
    names = [list(named_layouts(t)) for t in types]
    return [
        Policy(kind="static", layouts=dict(zip(types, combo, strict=True)))
        for combo in itertools.product(*names)
    ]


def _gb(profile: str) -> int:
    m = re.match(r"^\d+g\.(\d+)gb$", profile)
    return int(m.group(1)) if m else 0


def serves(policy: Policy, fleet: Fleet, entries: list[str]) -> bool:
    """Could any card of ``fleet`` under ``policy`` ever take a worker asking ``entries``?"""
    whole = {t for _, cards in fleet.groups for t, mig in cards if not mig or policy.kind == "whole"}
    if policy.kind == "whole":
        return any(e in whole for e in whole_entries(entries, fleet))
    for entry in entries:
        need = parse_gpu_type_id(entry)
        if need.kind == "gpu" and need.type_id in whole:
            return True
        if policy.kind == "dynamic" and need.kind in ("mig", "mig-class") and fleet.mig_types:
            return True
        held = {t: named_layouts(t)[n] for t, n in policy.layouts.items()}
        if need.kind == "mig" and need.profile in held.get(need.type_id, ()):
            return True
        if need.kind == "mig-class" and any(_gb(p) >= need.min_memory_gb for ps in held.values() for p in ps):
            return True
    return False


def whole_entries(entries: list[str], fleet: Fleet) -> list[str]:
    """A gpuTypeIds list with every MIG ask replaced by whole cards that would hold it."""
    out: list[str] = []
    types = sorted(fleet.types, key=lambda t: (_memory_gb(t), t))
    for entry in entries:
        need = parse_gpu_type_id(entry)
        if need.kind == "gpu" or need.kind == "mig":
            out.append(need.type_id)
        elif need.kind == "mig-class":
            out.extend(t for t in types if _memory_gb(t) >= need.min_memory_gb)
    return list(dict.fromkeys(out))


def _memory_gb(type_id: str) -> int:
    catalog = catalog_of(type_id)
    if catalog is not None:
        return catalog.memory_mb // 1000
    m = re.search(r"-(\d+)GB$", type_id)
    return int(m.group(1)) if m else 0
