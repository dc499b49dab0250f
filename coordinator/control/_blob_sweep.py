"""The leader's orphan sweep of job blobs in the object store.

A job's large input and output live under ``jobs/<endpoint>/<job>/`` and belong
to that job.  Its record leaves etcd by lease (TTL, result retention, after a
cancel or a purge too), so no code runs when a job goes; instead this loop lists
``jobs/`` every ``interval_s`` and deletes what belongs to no record.  The same
pass bounds leaks after crashes: a blob written by a /run whose record never got
committed has no owner either.  ``grace_s`` protects that window the other way
round: a blob is written before its record (a job is accepted only once its input
is stored), so a young blob without a record may be about to get one.  A blob is
thus deleted within ``interval_s + grace_s`` of its job's end (and clocks that
disagree by less than the grace change nothing).  ``plan_sweep`` is the pure part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence

import msgspec

from coordinator._schema import keys
from coordinator.store import Get, Store
from tide.api.errors import TideError
from tiered_storage import ObjectMeta, ObjectStore

__all__ = ["BlobSweepSettings", "BlobSweeper", "job_owner", "plan_sweep"]

log = logging.getLogger("tide.coordinator.blobs")

Owner = tuple[str, str]  # (endpoint, job id)
_BATCH = 100  # record reads per store transaction


class BlobSweepSettings(msgspec.Struct, frozen=True, kw_only=True):
    interval_s: float = 300.0  # how often the leader lists jobs/ ([blobs] sweep-interval-s)
    grace_s: float = 600.0  # a blob younger than this is kept, record or not ([blobs] sweep-grace-s)
    unowned_max_age_s: float = 7 * 86400.0  # a jobs/ key naming no job: kept this long


def job_owner(key: str) -> Owner | None:
    """(endpoint, job) for ``jobs/<endpoint>/<job>/<part>``; None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "jobs" or not all(parts):
        return None
    return parts[1], parts[2]


def plan_sweep(
    objects: Sequence[ObjectMeta], live: Collection[Owner], now: float, settings: BlobSweepSettings
) -> list[str]:
    """The keys to delete: job blobs older than the grace whose job is not ``live``, and
    ``jobs/`` keys that name no job once older than ``unowned_max_age_s``.  Keys of other
    kinds are left to their own owners' sweeps."""
    out: list[str] = []
    for meta in objects:
        age = now - meta.modified
        owner = job_owner(meta.key)
        if owner is None:
            if meta.key.startswith("jobs/") and age >= settings.unowned_max_age_s:
                out.append(meta.key)
        elif owner not in live and age >= settings.grace_s:
            out.append(meta.key)
    return out


class BlobSweeper:
    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        settings: BlobSweepSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._objects = objects
        self._settings = settings
        self._clock = clock
        self.deleted = 0  # objects deleted since start (tests, logs)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except TideError as exc:  # the object store or etcd is down: next pass
                log.warning("blob sweep skipped: %s", exc.message)
            await asyncio.sleep(self._settings.interval_s)

    async def sweep_once(self) -> list[str]:
        objects = [meta async for meta in self._objects.list("jobs/")]
        now = self._clock()
        # Only owners of blobs past the grace can lose theirs: read just those records.
        candidates = {
            o
            for m in objects
            if (o := job_owner(m.key)) is not None and now - m.modified >= self._settings.grace_s
        }
        live = await self._live(sorted(candidates))
        doomed = plan_sweep(objects, live, now, self._settings)
        for key in doomed:
            await self._objects.delete(key)
        if doomed:
            self.deleted += len(doomed)
            log.info("blob sweep deleted %d objects of ended jobs", len(doomed))
        return doomed

    async def _live(self, owners: list[Owner]) -> set[Owner]:
        live: set[Owner] = set()
        for start in range(0, len(owners), _BATCH):
            batch = owners[start : start + _BATCH]
            res = await self._store.txn([], [Get(key=keys.job(ep, job)) for ep, job in batch])
            live.update(owner for owner, kvs in zip(batch, res.responses, strict=True) if kvs)
        return live
