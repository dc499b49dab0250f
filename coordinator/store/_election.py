"""Leader election and lease keepalive over any ``Store`` (etcd's concurrency recipe).

A campaigner puts ``/tide/election/<name>/<lease hex>`` under its own lease.
The leader is the key with the lowest ``create_revision``; every other
campaigner watches only its predecessor's key (no thundering herd) and
re-reads when that key goes.  Leadership ends when the lease can no longer be
confirmed alive: ``LeaseKeeper`` declares it lost once a whole TTL has passed
since the last keepalive it *sent* that succeeded, which is never later than
the moment the server could expire it, so an old leader stops before a new
one can be elected (given clocks that run at the same rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, final

from coordinator.store._protocol import Compacted, KeyValue, Store
from tide.api.errors import InvalidArgument, NotFound, TideError

__all__ = ["Election", "LeaseKeeper"]

ELECTION_PREFIX: Final = b"/tide/election/"

log = logging.getLogger("tide.coordinator.election")


@final
class LeaseKeeper:
    """Keeps one lease alive with a keepalive every ``ttl``/3.

    ``start()`` grants the lease (or adopts ``lease``) and returns its id.
    ``lost`` is set once the lease is known expired (NotFound) or could not be
    renewed for a whole TTL (e.g. etcd unreachable); the keeper then stops.
    ``stop()`` is idempotent and revokes the lease unless told not to.
    """

    def __init__(self, store: Store, *, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0:
            raise InvalidArgument(f"lease TTL must be positive, got {ttl}")
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self.lease = 0
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, lease: int = 0) -> int:
        sent = self._clock()
        if lease:
            deadline = sent + await self._store.lease_keepalive(lease)
        else:
            lease = await self._store.lease_grant(self._ttl)
            deadline = sent + self._ttl
        self.lease = lease
        self._task = asyncio.create_task(self._run(deadline), name=f"lease-keeper-{lease:x}")
        return lease

    async def _run(self, deadline: float) -> None:
        try:
            await self._renew_until_lost(deadline)
        except Exception:  # a bug must not leave a dead keeper that still looks alive
            log.exception("lease keeper for %x failed", self.lease)
        log.warning("lease %x lost", self.lease)
        self.lost.set()

    async def _renew_until_lost(self, deadline: float) -> None:
        interval = self._ttl / 3
        retry = min(interval, 0.25)
        healthy = True
        while True:
            wait = min(interval if healthy else retry, deadline - self._clock())
            if wait > 0:
                await asyncio.sleep(wait)
            sent = self._clock()
            if sent >= deadline:
                return
            try:
                async with asyncio.timeout(deadline - sent):
                    granted = await self._store.lease_keepalive(self.lease)
            except NotFound:
                return
            except (TideError, TimeoutError):
                healthy = False  # transient (Unavailable, slow server): retry until the deadline
                continue
            deadline, healthy = sent + granted, True

    async def stop(self, *, revoke: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if revoke and self.lease and not self.lost.is_set():
            with contextlib.suppress(TideError):  # best effort: the TTL ends it anyway
                await self._store.lease_revoke(self.lease)


@final
class Election:
    """One campaigner for the leadership called ``name``.

    ``campaign()`` returns once this campaigner leads (it may wait forever);
    call it again after leadership ends to run for a new term.  ``lost`` is the
    current term's event: set when leadership ends for any reason (lease lost,
    key deleted, ``resign()``).  ``value`` is stored in the key so others can
    see who leads (``leader()``).  Not for concurrent use by several tasks.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        value: bytes = b"",
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not name or "/" in name:
            raise InvalidArgument(f"election name must be non-empty without '/': {name!r}")
        self._store = store
        self._prefix = ELECTION_PREFIX + name.encode() + b"/"
        self._value = value
        self._ttl = ttl
        self._clock = clock
        self._keeper: LeaseKeeper | None = None
        self._monitor: asyncio.Task[None] | None = None
        self.key = b""
        self.lost = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._monitor is not None and not self.lost.is_set()

    async def leader(self) -> KeyValue | None:
        """The current leader's key and value, or None without campaigners."""
        rr = await self._store.range(self._prefix)
        return min(rr.kvs, key=lambda kv: kv.create_revision, default=None)

    async def _new_session(self) -> LeaseKeeper:
        await self._end_session()
        keeper = LeaseKeeper(self._store, ttl=self._ttl, clock=self._clock)
        lease = await keeper.start()
        self._keeper = keeper
        self.lost = asyncio.Event()
        self.key = self._prefix + f"{lease:x}".encode()
        await self._store.put(self.key, self._value, lease=lease)
        return keeper

    async def campaign(self) -> None:
        if self.is_leader:
            return
        keeper = self._keeper
        if keeper is None or keeper.lost.is_set():
            keeper = await self._new_session()
        while True:
            rr = await self._store.range(self._prefix)
            mine = next((kv for kv in rr.kvs if kv.key == self.key), None)
            if mine is None or keeper.lost.is_set():  # our lease ran out while we waited
                keeper = await self._new_session()
                continue
            ahead = [kv for kv in rr.kvs if kv.create_revision < mine.create_revision]
            if not ahead:
                self._monitor = asyncio.create_task(self._watch_term(keeper, rr.revision + 1))
                return
            pred = max(ahead, key=lambda kv: kv.create_revision)
            await self._until_either(keeper, self._deleted(pred.key, rr.revision + 1))

    async def _deleted(self, key: bytes, start_revision: int) -> None:
        """Returns once ``key`` is gone (deleted after ``start_revision``, or absent)."""
        while True:
            try:
                async for batch in self._store.watch(key, start_revision=start_revision):
                    if any(e.type == "delete" and e.kv.key == key for e in batch):
                        return
                return  # the store closed
            except Compacted:  # history is gone: look at the key itself
                rr = await self._store.range(key)
                if all(kv.key != key for kv in rr.kvs):
                    return
                start_revision = rr.revision + 1

    async def _until_either(self, keeper: LeaseKeeper, deleted: Coroutine[Any, Any, None]) -> None:
        gone = asyncio.ensure_future(deleted)
        lost = asyncio.ensure_future(keeper.lost.wait())
        try:
            await asyncio.wait({gone, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (gone, lost):
                t.cancel()
            await asyncio.gather(gone, lost, return_exceptions=True)
        if gone.done() and not gone.cancelled() and gone.exception() is not None:
            raise gone.exception()  # type: ignore[misc]

    async def _watch_term(self, keeper: LeaseKeeper, start_revision: int) -> None:
        try:
            await self._until_either(keeper, self._deleted(self.key, start_revision))
        except TideError as e:  # cannot watch our own key: assume the worst
            log.warning("election %r: lost track of leadership: %s", self._prefix, e)
        finally:
            self.lost.set()

    async def _end_session(self) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.stop(revoke=True)  # revoking deletes our key: the next campaigner leads
        self.lost.set()

    async def resign(self) -> None:
        """Give up leadership (or candidacy) now.  Idempotent."""
        await self._end_session()
