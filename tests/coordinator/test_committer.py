"""The group committer (coordinator/_committer.py) on the in-memory store.

While one transaction is in flight, new units accumulate; the next flush commits them as one
transaction whose compares are the union of theirs, and hands each caller its own responses.  If
the combined transaction fails (or raises), each unit is retried alone so each caller gets its own
answer.  Units that write a key the batch already writes wait for the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from coordinator._committer import GroupCommitter
from coordinator.store import Compare, Get, MemoryStore, Op, Put, TxnResult
from tide.api.errors import Unavailable


class RecordingStore(MemoryStore):
    """MemoryStore that records each txn, can hold the next one, and can fail big ones."""

    def __init__(self) -> None:
        super().__init__()
        self.txns: list[tuple[list[Compare], list[Op]]] = []
        self.hold: asyncio.Event | None = None  # set: the txns waiting on it go on
        self.entered = asyncio.Event()  # a txn reached the store
        self.raise_above = 0  # txns of more ops than this raise Unavailable (0 = never)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self.txns.append((list(compares), list(success)))
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.raise_above and len(success) > self.raise_above:
            raise Unavailable("etcd went away")
        return await super().txn(compares, success, failure)


@pytest.fixture
async def store() -> AsyncIterator[RecordingStore]:
    s = RecordingStore()
    yield s
    await s.close()


@pytest.fixture
async def committer(store: RecordingStore) -> AsyncIterator[GroupCommitter]:
    c = GroupCommitter(store, max_in_flight=1)
    await c.start()
    yield c
    await c.stop()


def _absent(key: bytes) -> Compare:
    return Compare(key=key, target="create", op="==", value=0)


async def _behind_a_held_txn(store: RecordingStore, committer: GroupCommitter) -> asyncio.Task[TxnResult]:
    """Start one commit and keep it in flight until ``store.hold`` is set."""
    store.hold = asyncio.Event()
    first = asyncio.create_task(committer.commit([], [Put(key=b"/first", value=b"1")]))
    await store.entered.wait()
    return first


async def _release(store: RecordingStore) -> None:
    assert store.hold is not None
    store.hold.set()
    store.hold = None


async def test_units_that_arrive_during_a_flush_share_the_next_transaction(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    first = await _behind_a_held_txn(store, committer)
    units = [
        committer.commit([_absent(f"/k{i}".encode())], [Put(key=f"/k{i}".encode(), value=b"v")])
        for i in range(5)
    ]
    waiting = asyncio.gather(*units)
    await asyncio.sleep(0.01)
    await _release(store)
    results = await waiting
    assert (await first).succeeded
    assert len(store.txns) == 2  # the held one, then all five together
    compares, ops = store.txns[1]
    assert compares == [_absent(f"/k{i}".encode()) for i in range(5)]  # the union of the units'
    assert [op.key for op in ops] == [f"/k{i}".encode() for i in range(5)]
    assert all(r.succeeded and r.responses == [[]] for r in results)
    assert len({r.revision for r in results}) == 1


async def test_each_caller_gets_its_own_responses(store: RecordingStore, committer: GroupCommitter) -> None:
    await store.put(b"/a", b"A")
    await store.put(b"/b", b"B")
    first = await _behind_a_held_txn(store, committer)
    reads = asyncio.gather(
        committer.commit([], [Get(key=b"/a")]),
        committer.commit([], [Get(key=b"/b"), Put(key=b"/c", value=b"C")]),
    )
    await asyncio.sleep(0.01)
    await _release(store)
    a, b = await reads
    await first
    assert len(store.txns) == 2
    assert [[kv.value for kv in r] for r in a.responses] == [[b"A"]]
    assert [[kv.value for kv in r] for r in b.responses] == [[b"B"], []]


async def test_a_failed_batch_retries_each_unit_alone(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    await store.put(b"/taken", b"x")
    first = await _behind_a_held_txn(store, committer)
    ok = committer.commit([_absent(b"/free")], [Put(key=b"/free", value=b"1")])
    refused = committer.commit([_absent(b"/taken")], [Put(key=b"/taken", value=b"2")])
    both = asyncio.gather(ok, refused)
    await asyncio.sleep(0.01)
    await _release(store)
    r_ok, r_refused = await both
    await first
    assert (r_ok.succeeded, r_refused.succeeded) == (True, False)
    assert [len(ops) for _, ops in store.txns] == [1, 2, 1, 1]  # held, combined, then one each
    assert (await store.get(b"/taken")).value == b"x"  # type: ignore[union-attr]
    assert (await store.get(b"/free")).value == b"1"  # type: ignore[union-attr]


async def test_a_batch_that_raises_is_retried_unit_by_unit(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    first = await _behind_a_held_txn(store, committer)
    store.raise_above = 1  # the combined txn raises; single units go through
    units = asyncio.gather(
        *(committer.commit([], [Put(key=f"/u{i}".encode(), value=b"v")]) for i in range(3))
    )
    await asyncio.sleep(0.01)
    await _release(store)
    results = await units
    await first
    assert all(r.succeeded for r in results)
    assert [len(ops) for _, ops in store.txns] == [1, 3, 1, 1, 1]


async def test_an_error_of_a_lone_unit_reaches_its_caller(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    store.raise_above = 1
    with pytest.raises(Unavailable):
        await committer.commit([], [Put(key=b"/x", value=b"1"), Put(key=b"/y", value=b"2")])


async def test_units_writing_the_same_key_go_to_separate_batches(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    first = await _behind_a_held_txn(store, committer)
    units = asyncio.gather(
        committer.commit([], [Put(key=b"/same", value=b"1")]),
        committer.commit([], [Put(key=b"/other", value=b"2")]),
        committer.commit([], [Put(key=b"/same", value=b"3")]),
    )
    await asyncio.sleep(0.01)
    await _release(store)
    await units
    await first
    assert [[op.key for op in ops] for _, ops in store.txns[1:]] == [[b"/same", b"/other"], [b"/same"]]
    assert (await store.get(b"/same")).value == b"3"  # type: ignore[union-attr]  # in submission order


async def test_a_batch_stays_within_etcds_txn_op_limit(
    store: RecordingStore, committer: GroupCommitter
) -> None:
    first = await _behind_a_held_txn(store, committer)
    units = asyncio.gather(
        *(committer.commit([], [Put(key=f"/n{i}".encode(), value=b"v")]) for i in range(200))
    )
    await asyncio.sleep(0.01)
    await _release(store)
    await units
    await first
    sizes = [len(cs) + len(ops) for cs, ops in store.txns[1:]]
    assert sum(sizes) == 200 and max(sizes) <= 120 and len(sizes) == 2


async def test_before_start_a_commit_goes_straight_to_the_store(store: RecordingStore) -> None:
    result = await GroupCommitter(store).commit([_absent(b"/k")], [Put(key=b"/k", value=b"v")])
    assert result.succeeded and len(store.txns) == 1
