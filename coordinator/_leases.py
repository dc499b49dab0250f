"""Expiry by lease buckets: jobs, their queue entries and stream chunks are
attached to an etcd lease that expires when the job must be deleted (its TTL,
or its result retention).  Granting one lease per job would double the writes,
so leases are shared per time bucket: a key lives until the end of the bucket
that holds its deadline (at most ``granularity`` seconds longer).  etcd then
deletes expired jobs by itself, on every replica's behalf, and a coordinator
restart changes nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from coordinator.store import Store
from tide.api.errors import Unavailable

__all__ = ["LeaseBuckets"]


class LeaseBuckets:
    """Concurrency-safe: concurrent callers for one bucket share one grant."""

    def __init__(
        self, store: Store, *, granularity: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._granularity = granularity
        self._clock = clock
        self._buckets: dict[int, asyncio.Future[int]] = {}

    async def lease_until(self, expire_at: float) -> int:
        """A lease id that expires at ``expire_at`` rounded up to the bucket end."""
        expire_at = max(expire_at, self._clock() + 1.0)  # never a lease already gone
        bucket = math.ceil(expire_at / self._granularity)
        fut = self._buckets.get(bucket)
        if fut is not None and fut.done() and fut.exception() is None:
            return fut.result()  # the common case: no shield, no extra task
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._buckets[bucket] = fut
            self._prune(bucket)
            try:
                ttl = max(1.0, bucket * self._granularity - self._clock())
                fut.set_result(await self._store.lease_grant(ttl))
            except BaseException as exc:
                # Never leave the bucket's future pending (a cancelled grant would
                # hang every later write to this bucket): fail it, forget it.
                if self._buckets.get(bucket) is fut:
                    del self._buckets[bucket]
                interrupted = Unavailable("lease grant was interrupted; retry")
                fut.set_exception(exc if isinstance(exc, Exception) else interrupted)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
                raise
            return fut.result()
        return await asyncio.shield(fut)

    def _prune(self, newest: int) -> None:
        now_bucket = math.floor(self._clock() / self._granularity)
        if len(self._buckets) > 4096:
            for b in [b for b in self._buckets if b < now_bucket and b != newest]:
                del self._buckets[b]
