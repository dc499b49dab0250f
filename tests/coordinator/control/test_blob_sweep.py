"""The orphan sweep of job blobs: the pure plan (property tests) and one pass against
the in-memory store and a local object store."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from coordinator._schema import keys
from coordinator.control import BlobSweeper, BlobSweepSettings, job_owner, plan_sweep
from coordinator.store import MemoryStore
from tiered_storage import LocalObjectStore, ObjectMeta

SETTINGS = BlobSweepSettings(interval_s=1.0, grace_s=600.0, unowned_max_age_s=86400.0)
NOW = 1_000_000.0

_name = st.sampled_from(["e1", "e2", "j1", "j2", "j3"])
_key = st.one_of(
    st.builds(
        lambda ep, j, part: f"jobs/{ep}/{j}/{part}", _name, _name, st.sampled_from(["input", "output"])
    ),
    st.sampled_from(["jobs/stray", "jobs/a/b/c/d", "bundles/e1/x", "batches/b/shard-0"]),
)
_objects = st.lists(
    st.builds(lambda k, age: ObjectMeta(key=k, size=1, modified=NOW - age), _key, st.floats(0, 200_000)),
    max_size=30,
    unique_by=lambda m: m.key,  # a listing names each key once
)
_live = st.sets(st.tuples(_name, _name), max_size=10)


@given(_objects, _live)
def test_plan_never_deletes_a_live_jobs_blob_or_a_young_one(
    objects: list[ObjectMeta], live: set[tuple[str, str]]
) -> None:
    doomed = set(plan_sweep(objects, live, NOW, SETTINGS))
    for meta in objects:
        owner = job_owner(meta.key)
        if meta.key in doomed:
            assert meta.key.startswith("jobs/")  # other kinds belong to their own sweeps
            assert owner not in live
            assert NOW - meta.modified >= SETTINGS.grace_s


@given(_objects, _live)
def test_plan_deletes_every_orphan_past_its_bound(
    objects: list[ObjectMeta], live: set[tuple[str, str]]
) -> None:
    doomed = set(plan_sweep(objects, live, NOW, SETTINGS))
    for meta in objects:
        owner, age = job_owner(meta.key), NOW - meta.modified
        if owner is not None and owner not in live and age >= SETTINGS.grace_s:
            assert meta.key in doomed
        if owner is None and meta.key.startswith("jobs/") and age >= SETTINGS.unowned_max_age_s:
            assert meta.key in doomed


def test_job_owner() -> None:
    assert job_owner("jobs/ep/j1/input") == ("ep", "j1")
    assert job_owner("jobs/ep/j1") is None and job_owner("bundles/ep/j1/x") is None


async def test_a_pass_deletes_blobs_of_gone_jobs_only(tmp_path: Path) -> None:
    store, objects = MemoryStore(), LocalObjectStore(tmp_path)
    for job in ("live", "gone", "young"):
        await objects.put(f"jobs/ep/{job}/input", b"x")
    await objects.put("bundles/ep/code.tar", b"x")
    await store.put(keys.job("ep", "live"), b"{}")
    clock = [NOW]
    sweeper = BlobSweeper(store, objects, SETTINGS, clock=lambda: clock[0])
    assert await sweeper.sweep_once() == []  # everything is younger than the grace
    clock[0] = (await objects.head("jobs/ep/gone/input")).modified + SETTINGS.grace_s + 1
    await objects.put("jobs/ep/young/input", b"y")  # rewritten: young again
    os.utime(tmp_path / "jobs/ep/young/input", (clock[0], clock[0]))
    assert await sweeper.sweep_once() == ["jobs/ep/gone/input"]
    left = sorted([m.key async for m in objects.list("")])
    assert left == ["bundles/ep/code.tar", "jobs/ep/live/input", "jobs/ep/young/input"]
    await store.close()
