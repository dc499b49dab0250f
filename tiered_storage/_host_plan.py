"""Which staged models a host evicts to make room for another: least recently used first,
never one a running worker uses, and nothing at all when even that would not make room."""

from __future__ import annotations

import msgspec

__all__ = ["HostModel", "plan_host_evictions"]


class HostModel(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    nbytes: int
    last_used: float  # seconds since the epoch


def plan_host_evictions(
    held: list[HostModel], *, need: int, budget: int, pinned: frozenset[str] = frozenset()
) -> list[str] | None:
    """Ids to evict (oldest first) so ``need`` more bytes fit in ``budget``; None when they
    cannot fit even with every unpinned model evicted (the host cache is full)."""
    used = sum(m.nbytes for m in held)
    if need > budget:
        return None
    evict: list[str] = []
    for model in sorted(held, key=lambda m: (m.last_used, m.id)):
        if used + need <= budget:
            break
        if model.id in pinned:
            continue
        evict.append(model.id)
        used -= model.nbytes
    return evict if used + need <= budget else None
