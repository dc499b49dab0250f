"""``MemoryStore``: the in-process Store (``tide dev``, unit tests).

One event loop, no threads: every method runs to completion without awaiting,
so each call is atomic, exactly like one etcd request.  Leases expire lazily on
every call and from one loop timer armed for the earliest deadline; the timer
only wakes the store, the injected ``clock`` decides what is due, so tests can
drive expiry with a fake clock and any call.

Watchers do not buffer: each one remembers the next revision it needs and reads
the shared, bounded history when woken.  A watcher that falls behind the
history (``max_history`` revisions, or an explicit ``compact``) gets
``Compacted``, as a slow etcd watcher would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final, final

from coordinator.store._mvcc import MvccCore
from coordinator.store._protocol import (
    Compare,
    KeyValue,
    Op,
    RangeResult,
    TxnResult,
    WatchEvent,
)
from tide.api.errors import Unavailable

__all__ = ["MemoryStore"]

DEFAULT_MAX_HISTORY: Final = 100_000
ETCD_MAX_TXN_OPS: Final = 128  # etcd's --max-txn-ops default; keeps dev code etcd-safe


class _Watcher:
    __slots__ = ("next_rev", "prefix", "wake")

    def __init__(self, prefix: bytes, next_rev: int) -> None:
        self.prefix = prefix
        self.next_rev = next_rev
        self.wake = asyncio.Event()


@final
class MemoryStore:
    """In-process MVCC Store with etcd v3 semantics.  See ``Store`` for the contract.

    ``clock`` (default ``time.monotonic``) times leases.  ``max_history`` bounds
    the revisions kept for watchers.  ``max_txn_ops`` mirrors etcd's limit so
    code tested here does not break on etcd.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_history: int = DEFAULT_MAX_HISTORY,
        max_txn_ops: int = ETCD_MAX_TXN_OPS,
    ) -> None:
        self._core = MvccCore(max_history=max_history, max_txn_ops=max_txn_ops)
        self._clock = clock
        self._watchers: set[_Watcher] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._closed = False

    # -- plumbing ------------------------------------------------------------

    def _enter(self) -> None:
        """Every call starts here: refuse after close, expire due leases."""
        if self._closed:
            raise Unavailable("store is closed")
        for events in self._core.expire(self._clock()):
            self._notify(events)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self._core.next_deadline()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        if not self._closed:
            self._enter()

    def _notify(self, events: list[WatchEvent]) -> None:
        if not events:
            return
        rev = events[0].revision
        for w in self._watchers:
            if w.wake.is_set() or rev < w.next_rev:
                continue
            if any(e.kv.key.startswith(w.prefix) for e in events):
                w.wake.set()
            elif w.next_rev == rev:
                w.next_rev = rev + 1  # caught-up watcher skips a revision it does not care about

    # -- reads ---------------------------------------------------------------

    async def get(self, key: bytes) -> KeyValue | None:
        self._enter()
        return self._core.get(key)

    async def range(self, prefix: bytes, *, limit: int = 0, start: bytes | None = None) -> RangeResult:
        self._enter()
        return self._core.range(prefix, limit=limit, start=start)

    async def revision(self) -> int:
        self._enter()
        return self._core.revision

    # -- writes --------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        self._enter()
        events: list[WatchEvent] = []
        rev = self._core.put(key, value, lease, events)
        self._notify(events)
        return rev

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        self._enter()
        events: list[WatchEvent] = []
        n = self._core.delete(key, prefix, events)
        self._notify(events)
        return n

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._enter()
        events: list[WatchEvent] = []
        result = self._core.txn(compares, success, failure, events)
        self._notify(events)
        return result

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``; watches from earlier raise ``Compacted``."""
        self._enter()
        self._core.compact(revision)

    # -- leases --------------------------------------------------------------

    async def lease_grant(self, ttl: float) -> int:
        self._enter()
        lease = self._core.lease_grant(ttl, self._clock())
        self._arm_timer()
        return lease

    async def lease_keepalive(self, lease: int) -> float:
        self._enter()
        ttl = self._core.lease_keepalive(lease, self._clock())
        self._arm_timer()
        return ttl

    async def lease_revoke(self, lease: int) -> None:
        self._enter()
        events: list[WatchEvent] = []
        self._core.lease_revoke(lease, events)
        self._notify(events)
        self._arm_timer()

    # -- watch ---------------------------------------------------------------

    def watch(self, prefix: bytes, *, start_revision: int = 0) -> AsyncIterator[list[WatchEvent]]:
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        self._enter()
        w = _Watcher(prefix, start_revision if start_revision > 0 else self._core.revision + 1)
        self._watchers.add(w)
        try:
            while True:
                events, w.next_rev = self._core.events_since(w.next_rev, prefix)
                if events:
                    yield events
                    continue
                if self._closed:
                    return
                w.wake.clear()
                await w.wake.wait()
        finally:
            self._watchers.discard(w)

    async def close(self) -> None:
        """End pending watches; later calls raise ``Unavailable``.  Idempotent."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for w in self._watchers:
            w.wake.set()
