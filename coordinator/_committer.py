"""Group commit: many small transactions share one etcd round trip and fsync.

Callers submit independent units (compares + ops).  While a transaction is
in flight, new units accumulate; the next flush commits them together as one
etcd txn whose compares are the union of the units'.  If that combined txn
fails, at least one unit's compares did not hold, so the batch falls back to
one txn per unit to give each its own answer.  Units touching a key already
written by the batch wait for the next one (etcd rejects duplicate keys in a
txn).  Throughput then hinges on batches per fsync, not requests per fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.store import MAX_REQUEST_BYTES, Compare, Op, Put, Store, TxnResult

__all__ = ["GroupCommitter"]

_MAX_TXN_OPS = 120  # etcd's --max-txn-ops defaults to 128
# Room under the store's request limit: a batch of large units would be refused whole
# and fall back to one txn per unit.
_MAX_TXN_BYTES = MAX_REQUEST_BYTES * 2 // 3


@dataclass(slots=True)
class _Unit:
    compares: Sequence[Compare]
    ops: Sequence[Op]
    future: asyncio.Future[TxnResult]
    keys: set[bytes]
    size: int  # bytes of keys and values put


class GroupCommitter:
    """Concurrency-safe; ``commit`` may be awaited from any number of tasks."""

    def __init__(self, store: Store, *, max_in_flight: int = 2) -> None:
        self._store = store
        self._pending: list[_Unit] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Kept, not looked up per commit: on Python 3.11 get_running_loop() costs a
        # getpid() system call (fork detection), which profiled at ~3% of the coordinator.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.commit_seconds: list[float] = []  # drained by metrics

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(loop), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> TxnResult:
        if self._task is None or self._loop is None:  # not started: commit directly (tools, tests)
            return await self._store.txn(compares, ops)
        future: asyncio.Future[TxnResult] = self._loop.create_future()
        # Every op names one key (a prefix op its prefix): the keys this unit touches.
        size = sum(len(op.key) + len(op.value) for op in ops if isinstance(op, Put))
        self._pending.append(_Unit(compares, ops, future, {op.key for op in ops}, size))
        self._wake.set()
        return await future

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._slots.acquire()
                batch = self._take_batch()
                task = loop.create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    def _take_batch(self) -> list[_Unit]:
        batch: list[_Unit] = []
        rest: list[_Unit] = []
        written: set[bytes] = set()
        n_ops = n_bytes = 0
        for unit in self._pending:
            fits = n_ops + len(unit.ops) + len(unit.compares) <= _MAX_TXN_OPS
            fits = (fits and n_bytes + unit.size <= _MAX_TXN_BYTES) or not batch
            if fits and written.isdisjoint(unit.keys):
                batch.append(unit)
                written |= unit.keys
                n_ops += len(unit.ops) + len(unit.compares)
                n_bytes += unit.size
            else:
                rest.append(unit)
        self._pending = rest
        return batch

    async def _flush(self, batch: list[_Unit]) -> None:
        try:
            t0 = time.perf_counter()
            if len(batch) == 1:
                await self._commit_one(batch[0])
            else:
                await self._commit_many(batch)
            self.commit_seconds.append(time.perf_counter() - t0)
            if len(self.commit_seconds) > 10_000:
                del self.commit_seconds[:5_000]
        finally:
            self._slots.release()
            if self._pending:
                self._wake.set()

    async def _commit_one(self, unit: _Unit) -> None:
        try:
            result = await self._store.txn(unit.compares, unit.ops)
        except Exception as exc:  # delivered to the caller, who owns the error
            if not unit.future.done():
                unit.future.set_exception(exc)
            return
        if not unit.future.done():
            unit.future.set_result(result)

    async def _commit_many(self, batch: list[_Unit]) -> None:
        compares = [c for u in batch for c in u.compares]
        ops = [o for u in batch for o in u.ops]
        try:
            result = await self._store.txn(compares, ops)
        except Exception:
            result = None
        if result is None or not result.succeeded:
            await asyncio.gather(*(self._commit_one(u) for u in batch))
            return
        i = 0
        for unit in batch:
            part = result.responses[i : i + len(unit.ops)]
            i += len(unit.ops)
            if not unit.future.done():
                unit.future.set_result(TxnResult(succeeded=True, revision=result.revision, responses=part))
