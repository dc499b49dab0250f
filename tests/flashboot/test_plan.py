"""Eviction planning: LRU, pinned models untouched, budgets met whenever they can be, no more evicted
than needed.  ``plan_stores`` is what both eviction passes run (``HostStore.make_room``, one store;
``enforce_all``, every store of the host)."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from flashboot._plan import ModelState, StoreUsage, plan_evictions, plan_stores


def _m(fp: str, *, t1: bool = True, t2: bool = False, pinned: bool = False, used: float = 0.0) -> ModelState:
    return ModelState(
        fingerprint=fp, data_bytes=100, image_bytes=110, in_t1=t1, in_t2=t2, pinned=pinned, last_used=used
    )


def test_lru_t1_copy_is_demoted_when_the_disk_has_room() -> None:
    models = [_m("old", used=1), _m("new", used=2)]
    plan = plan_evictions(models, ram_budget=150, disk_budget=1000)
    assert plan.demote == ("old",) and not plan.drop_t1 and plan.ram_fits


def test_copy_already_on_disk_is_just_dropped() -> None:
    plan = plan_evictions([_m("a", t2=True, used=1), _m("b", used=2)], ram_budget=100, disk_budget=1000)
    assert plan.drop_t1 == ("a",) and not plan.demote


def test_pinned_models_are_never_evicted() -> None:
    plan = plan_evictions([_m("a", pinned=True, used=0), _m("b", used=5)], ram_budget=0, disk_budget=0)
    assert "a" not in plan.drop_t1 + plan.demote and not plan.ram_fits


def test_older_images_make_room_for_a_demotion_newer_ones_do_not() -> None:
    models = [
        _m("img-old", t1=False, t2=True, used=0),
        _m("victim", used=5),
        _m("img-new", t1=False, t2=True, used=9),
    ]
    plan = plan_evictions(models, ram_budget=0, disk_budget=230)
    assert plan.demote == ("victim",) and plan.drop_t2 == ("img-old",)
    plan = plan_evictions(models, ram_budget=0, disk_budget=115)  # only the newer image is left to drop
    assert plan.drop_t1 == ("victim",) and not plan.demote


def test_disk_need_drops_lru_images() -> None:
    models = [_m("a", t1=False, t2=True, used=1), _m("b", t1=False, t2=True, used=2)]
    plan = plan_evictions(models, ram_budget=0, disk_budget=250, need_disk=100)
    assert plan.drop_t2 == ("a",) and plan.disk_fits


models_st = st.lists(
    st.builds(
        ModelState,
        fingerprint=st.uuids().map(str),
        data_bytes=st.integers(1, 100),
        image_bytes=st.integers(1, 120),
        in_t1=st.booleans(),
        in_t2=st.booleans(),
        pinned=st.booleans(),
        last_used=st.floats(0, 100),
    ).filter(lambda m: m.in_t1 or m.in_t2),
    max_size=12,
    unique_by=lambda m: m.fingerprint,
)


@given(models_st, st.integers(0, 600), st.integers(0, 600), st.integers(0, 100), st.integers(0, 100))
def test_plan_properties(
    models: list[ModelState], ram: int, disk: int, need_ram: int, need_disk: int
) -> None:
    plan = plan_evictions(models, ram_budget=ram, disk_budget=disk, need_ram=need_ram, need_disk=need_disk)
    by_fp = {m.fingerprint: m for m in models}
    touched = set(plan.demote) | set(plan.drop_t1) | set(plan.drop_t2)
    assert not any(by_fp[fp].pinned for fp in touched)
    assert all(by_fp[fp].in_t1 and not by_fp[fp].in_t2 for fp in plan.demote)
    assert all(by_fp[fp].in_t1 for fp in plan.drop_t1) and all(by_fp[fp].in_t2 for fp in plan.drop_t2)
    t1_after = [m for m in models if m.in_t1 and m.fingerprint not in set(plan.demote) | set(plan.drop_t1)]
    if plan.ram_fits:
        assert sum(m.data_bytes for m in t1_after) + need_ram <= ram
    else:  # only pinned copies are left to evict
        assert all(m.pinned for m in t1_after)
    disk_after = sum(m.image_bytes for m in models if m.in_t2 and m.fingerprint not in plan.drop_t2)
    disk_after += sum(by_fp[fp].image_bytes for fp in plan.demote)
    if plan.disk_fits:
        assert disk_after + need_disk <= disk
    # LRU: every T1 copy evicted is older than every unpinned copy kept.
    evicted = [by_fp[fp].last_used for fp in plan.demote + plan.drop_t1]
    kept = [m.last_used for m in t1_after if not m.pinned]
    if evicted and kept:
        assert max(evicted) <= min(kept)


def test_bytes_no_model_accounts_for_take_room() -> None:
    usage = StoreUsage(models=(_m("a", used=1), _m("b", used=2)), ram_used=250, disk_used=0)
    plan = plan_stores([usage], ram_budget=200, disk_budget=1000)  # a 50-byte fill is under way
    assert plan.demote == ("a",) and plan.ram_fits


def test_a_store_without_models_only_costs_its_bytes() -> None:
    broken = StoreUsage(ram_used=100, disk_used=0)
    usage = StoreUsage(models=(_m("0:a", used=1), _m("0:b", used=2)), ram_used=200, disk_used=0)
    plan = plan_stores([usage, broken], ram_budget=200, disk_budget=1000)
    assert plan.demote == ("0:a",) and plan.ram_fits  # 300 held, 200 allowed


def test_stores_share_one_lru_order() -> None:
    one = StoreUsage(models=(_m("0:new", used=9),), ram_used=100, disk_used=0)
    two = StoreUsage(models=(_m("1:old", used=1),), ram_used=100, disk_used=0)
    plan = plan_stores([one, two], ram_budget=100, disk_budget=1000)
    assert plan.demote == ("1:old",)


@st.composite
def stores_st(draw: st.DrawFn) -> list[StoreUsage]:
    """Stores whose directories hold at least what their models account for (the files exist),
    plus a few bytes nobody accounts for (fills in progress, recycled memory)."""
    out = []
    for i in range(draw(st.integers(1, 3))):
        models = tuple(
            msgspec.structs.replace(m, fingerprint=f"{i}:{m.fingerprint}") for m in draw(models_st)
        )
        ram = sum(m.data_bytes for m in models if m.in_t1) + draw(st.integers(0, 60))
        disk = sum(m.image_bytes for m in models if m.in_t2) + draw(st.integers(0, 60))
        out.append(StoreUsage(models=models, ram_used=ram, disk_used=disk))
    return out


def _lru_key(m: ModelState) -> tuple[float, str]:
    return m.last_used, m.fingerprint


@given(stores_st(), st.integers(0, 800), st.integers(0, 800), st.integers(0, 100), st.integers(0, 100))
def test_plan_stores_properties(
    stores: list[StoreUsage], ram: int, disk: int, need_ram: int, need_disk: int
) -> None:
    plan = plan_stores(stores, ram_budget=ram, disk_budget=disk, need_ram=need_ram, need_disk=need_disk)
    by_fp = {m.fingerprint: m for s in stores for m in s.models}
    ram_used = sum(s.ram_used for s in stores)
    disk_used = sum(s.disk_used for s in stores)
    # Pinned models (a live process maps them) are never touched, in any tier.
    assert not any(by_fp[fp].pinned for fp in plan.demote + plan.drop_t1 + plan.drop_t2)
    victims = sorted((by_fp[fp] for fp in plan.demote + plan.drop_t1), key=_lru_key)
    freed = sum(m.data_bytes for m in victims)
    # The RAM fits after the plan exactly when the plan says so (unaccounted bytes count too).
    assert plan.ram_fits == (ram_used - freed + need_ram <= ram)
    # Never more than needed: before its newest T1 victim went, the RAM did not fit.
    if victims:
        assert ram_used - freed + victims[-1].data_bytes + need_ram > ram
    # LRU across stores: every T1 copy evicted is older than every unpinned T1 copy kept.
    kept = [m for m in by_fp.values() if m.in_t1 and not m.pinned and m not in victims]
    if victims and kept:
        assert _lru_key(victims[-1]) < min(_lru_key(m) for m in kept)
    # Images go oldest first too, and the disk fits whenever the plan says so.
    dropped = [by_fp[fp] for fp in plan.drop_t2]
    assert dropped == sorted(dropped, key=_lru_key)
    kept_images = [m for m in by_fp.values() if m.in_t2 and not m.pinned and m not in dropped]
    if dropped and kept_images:
        assert _lru_key(dropped[-1]) < min(_lru_key(m) for m in kept_images)
    demoted = sum(by_fp[fp].image_bytes for fp in plan.demote)
    if plan.disk_fits:
        assert disk_used - sum(m.image_bytes for m in dropped) + demoted + need_disk <= disk
