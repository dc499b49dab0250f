"""Metering ends when a worker's process ends, not when it is unassigned.

A removed worker keeps its GPU (and its bill) while noded stops it, which can
take up to the stop grace.  So the scheduler only marks a usage record
``unassigned_at``; this leader loop closes it (``stopped_at``) once the
worker's host reports, in a heartbeat sent after the unassignment, that the
process is gone, or once the host is lost or removed.

The loop keeps the open records in memory: one range of ``usage/`` when it
starts leading, then a watch from there (no store read per pass; one write
per closed record).  ``plan_usage_closes`` is the pure decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping

import msgspec

from coordinator._node_schema import NodeRecord, UsageRecord, nkeys
from coordinator._schema import encode
from coordinator.store import Compare, Put, Store, WatchEvent
from coordinator.view import ClusterView
from tide.api.errors import TideError

__all__ = ["UsageCloser", "plan_usage_closes"]

log = logging.getLogger("tide.coordinator.metering")

_decode = msgspec.json.Decoder(UsageRecord).decode


def plan_usage_closes(
    open_usage: Mapping[str, UsageRecord],
    assigned: Collection[str],
    nodes: Mapping[str, NodeRecord],
    now: float,
) -> dict[str, UsageRecord]:
    """The open records (by worker id) to close now, with their ``stopped_at``.

    An assigned worker is never closed.  An unassigned one is closed when its host is
    gone (now), lost (at its last heartbeat), or sent a heartbeat after the unassignment
    that no longer lists the worker alive (at that heartbeat: the process ended before).
    """
    out: dict[str, UsageRecord] = {}
    for worker, u in open_usage.items():
        if u.stopped_at or worker in assigned:
            continue
        node = nodes.get(u.node_id)
        if node is None:
            end = now
        elif node.lost:
            end = node.last_heartbeat
        elif node.last_heartbeat > u.unassigned_at and not any(
            w.worker_id == worker and w.state != "exited" for w in node.workers
        ):
            end = min(now, node.last_heartbeat)
        else:
            continue
        out[worker] = msgspec.structs.replace(u, stopped_at=max(end, u.started_at, u.unassigned_at))
    return out


class UsageCloser:
    """Leader loop: close the usage records of removed workers whose process ended."""

    def __init__(
        self,
        store: Store,
        view: ClusterView,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._view = view
        self._interval = interval_s
        self._clock = clock
        self._open: dict[str, tuple[UsageRecord, int]] = {}  # worker -> (record, mod revision)

    async def run(self) -> None:
        await self._view.ready.wait()
        watcher: asyncio.Task[None] | None = None
        try:
            while True:
                if watcher is None or watcher.done():  # first pass, or the watch broke (compaction)
                    watcher = await self._sync()
                try:
                    await self.tick(self._clock())
                except TideError as exc:
                    log.warning("metering pass failed: %s", exc.message)
                await asyncio.sleep(self._interval)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, TideError):
                    await watcher

    async def _sync(self) -> asyncio.Task[None]:
        """List the records, then follow them from the list's revision."""
        res = await self._store.range(nkeys.USAGE)
        self._open.clear()
        for kv in res.kvs:
            self._remember(kv.key, kv.value, kv.mod_revision)
        return asyncio.create_task(self._follow(res.revision + 1), name="usage-watch")

    async def tick(self, now: float) -> None:
        records = {w: rec for w, (rec, _) in self._open.items()}
        nodes = {n: rec for n, (rec, _) in self._view.nodes.items()}
        for worker, closed in plan_usage_closes(records, self._view.assignments, nodes, now).items():
            rev = self._open[worker][1]
            await self._store.txn(
                [Compare(key=nkeys.usage(worker), target="mod", op="==", value=rev)],
                [Put(key=nkeys.usage(worker), value=encode(closed))],
            )
            self._open.pop(worker, None)  # closed, or changed meanwhile: the watch brings it back

    async def _follow(self, start: int) -> None:
        async for events in self._store.watch(nkeys.USAGE, start_revision=start):
            for ev in events:
                self._apply(ev)

    def _apply(self, ev: WatchEvent) -> None:
        if ev.type == "delete":
            self._open.pop(ev.kv.key[len(nkeys.USAGE) :].decode(), None)
        else:
            self._remember(ev.kv.key, ev.kv.value, ev.kv.mod_revision)

    def _remember(self, key: bytes, value: bytes, rev: int) -> None:
        worker = key[len(nkeys.USAGE) :].decode()
        u = _decode(value)
        if u.stopped_at:
            self._open.pop(worker, None)
        else:
            self._open[worker] = (u, rev)
