"""/v2/<ep>/health's job counters (completed, failed, retried) that survive restarts.

Every replica counts the job changes its view sees; the leader folds them into
one stored record per endpoint (``/tide/jobstats/<ep>``) every few seconds, so
there is no store write per job.  A record holds totals up to a store revision
``revision``; a replica answers with the record plus what it saw after that
revision.  The watch delivers changes in revision order, so when a new record
arrives every change it covers has already been seen and is dropped from the
replica's log.  A restarted replica starts from the record: it can be behind
by the changes since the last fold until the leader's next one (a stopping
leader folds once more on its way out).  A finished job record is never
written again (results for a job in FINAL_STATES are ignored), and each job
counts once per outcome and per retry number in a replica's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Final

import msgspec

from coordinator._schema import JobRecord, encode
from coordinator.store import Compare, Put, Store, WatchEvent
from tide.api.errors import TideError

__all__ = ["JOBSTATS", "JobStats", "JobStatsFlusher", "JobStatsRecord"]

log = logging.getLogger("tide.coordinator.jobstats")

JOBSTATS: Final = b"/tide/jobstats/"
_KINDS: Final = ("COMPLETED", "FAILED", "RETRIED")


class JobStatsRecord(msgspec.Struct, frozen=True, kw_only=True):
    completed: int = 0
    failed: int = 0
    retried: int = 0
    revision: int = 0  # the totals count every job change up to this store revision


_decode = msgspec.json.Decoder(JobStatsRecord).decode


class JobStats:
    """Stored totals plus this replica's changes after them, per endpoint."""

    def __init__(self) -> None:
        self._stored: dict[str, tuple[JobStatsRecord, int]] = {}  # ep -> (record, mod revision)
        # ep -> (job id, kind) -> revision: one entry per job and outcome (a rewrite of a
        # finished record is not a second completion; each retry number counts once)
        self._log: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)

    def observe(self, record: JobRecord, revision: int) -> None:
        kind: str
        if record.status in ("COMPLETED", "FAILED"):
            kind = record.status
        elif record.status == "IN_QUEUE" and record.retries:
            kind = f"RETRIED/{record.retries}"
        else:
            return
        if revision > self._stored.get(record.endpoint_id, (JobStatsRecord(), 0))[0].revision:
            self._log[record.endpoint_id].setdefault((record.id, kind), revision)

    def apply_stored(self, ev: WatchEvent) -> None:
        ep = ev.kv.key[len(JOBSTATS) :].decode()
        if ev.type == "delete":
            self._stored.pop(ep, None)
            return
        record = _decode(ev.kv.value)
        self._stored[ep] = (record, ev.kv.mod_revision)
        if log_ := self._log.get(ep):
            self._log[ep] = {k: rev for k, rev in log_.items() if rev > record.revision}

    def counts(self, ep: str) -> dict[str, int]:
        base = self._stored.get(ep, (JobStatsRecord(), 0))[0]
        out = {"COMPLETED": base.completed, "FAILED": base.failed, "RETRIED": base.retried}
        for (_, kind), rev in self._log.get(ep, {}).items():
            if rev > base.revision:
                out[kind.partition("/")[0]] += 1
        return out

    def plan_flush(self, through: int) -> list[tuple[str, JobStatsRecord, int]]:
        """(ep, new record up to ``through``, the mod revision to compare) for every
        endpoint with changes not yet stored.  ``through``: the view's revision now."""
        out = []
        for ep, entries in self._log.items():
            base, mod = self._stored.get(ep, (JobStatsRecord(), 0))
            fresh = [k.partition("/")[0] for (_, k), rev in entries.items() if base.revision < rev <= through]
            if fresh:
                out.append(
                    (
                        ep,
                        JobStatsRecord(
                            completed=base.completed + fresh.count("COMPLETED"),
                            failed=base.failed + fresh.count("FAILED"),
                            retried=base.retried + fresh.count("RETRIED"),
                            revision=through,
                        ),
                        mod,
                    )
                )
        return out


class JobStatsFlusher:
    """Leader loop: store the counters every ``interval_s`` (and once more when stopped)."""

    def __init__(
        self, store: Store, stats: JobStats, revision: Callable[[], int], *, interval_s: float = 5.0
    ) -> None:
        self._store = store
        self._stats = stats
        self._revision = revision
        self._interval = interval_s

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())

    async def flush(self) -> None:
        for ep, record, mod in self._stats.plan_flush(self._revision()):
            key = JOBSTATS + ep.encode()
            try:
                # Guarded: a second leader (briefly, around an election) cannot add twice.
                await self._store.txn(
                    [Compare(key=key, target="mod", op="==", value=mod)], [Put(key=key, value=encode(record))]
                )
            except TideError as exc:
                log.warning("storing the job counters of %s failed: %s", ep, exc.message)
