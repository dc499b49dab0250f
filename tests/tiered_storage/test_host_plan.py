"""The host tier's eviction plan: LRU, pins kept, all or nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tiered_storage import HostModel, plan_host_evictions

models = st.lists(
    st.builds(
        HostModel,
        id=st.text("abcdef", min_size=1, max_size=4),
        nbytes=st.integers(0, 100),
        last_used=st.floats(0, 1000),
    ),
    max_size=8,
    unique_by=lambda m: m.id,
)


@given(models, st.integers(0, 300), st.integers(0, 400), st.data())
def test_evicts_lru_unpinned_until_it_fits(
    held: list[HostModel], need: int, budget: int, data: st.DataObject
) -> None:
    pinned = frozenset(data.draw(st.sets(st.sampled_from([m.id for m in held]))) if held else set())
    plan = plan_host_evictions(held, need=need, budget=budget, pinned=pinned)
    pinned_bytes = sum(m.nbytes for m in held if m.id in pinned)
    if plan is None:  # only when evicting every unpinned model would not be enough
        assert need + pinned_bytes > budget or need > budget
        return
    assert not set(plan) & pinned
    kept = [m for m in held if m.id not in plan]
    assert sum(m.nbytes for m in kept) + need <= budget
    if plan:  # least recently used first: nothing unpinned and kept is older than the last evicted
        last = max((m for m in held if m.id in plan), key=lambda m: (m.last_used, m.id))
        assert all((m.last_used, m.id) > (last.last_used, last.id) for m in kept if m.id not in pinned)


def test_nothing_to_evict_when_it_fits() -> None:
    held = [HostModel(id="a", nbytes=10, last_used=1.0)]
    assert plan_host_evictions(held, need=5, budget=20) == []
    assert plan_host_evictions(held, need=15, budget=20) == ["a"]
    assert plan_host_evictions(held, need=15, budget=20, pinned=frozenset({"a"})) is None
