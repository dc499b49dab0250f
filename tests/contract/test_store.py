"""One contract suite for every Store: MemoryStore always, real etcd when installed.

Waits are bounded (``WAIT`` seconds) but nothing asserts on how long a thing
took; lease tests use 1 s TTLs (the test etcd's minimum, see tests/fixtures/etcd.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordinator.store import (
    Compacted,
    Compare,
    Delete,
    Election,
    EtcdStore,
    Get,
    LeaseKeeper,
    MemoryStore,
    Put,
    Store,
    WatchEvent,
    open_store,
)
from tests.contract.conftest import StoreFactory
from tests.fixtures.etcd import EtcdServer, free_port
from tide.api.errors import InvalidArgument, NotFound, Unavailable

WAIT = 15.0  # generous bound on any single wait; never an assertion on timing


async def next_batch(it: AsyncIterator[list[WatchEvent]]) -> list[WatchEvent]:
    async with asyncio.timeout(WAIT):
        return await anext(it)


async def take(it: AsyncIterator[list[WatchEvent]], n: int) -> list[WatchEvent]:
    out: list[WatchEvent] = []
    while len(out) < n:
        out.extend(await next_batch(it))
    return out


# -- KV ------------------------------------------------------------------------


async def test_store_put_get_roundtrip(store: Store) -> None:
    assert await store.get(b"k") is None
    r1 = await store.put(b"k", b"v1")
    kv = await store.get(b"k")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (b"v1", r1, r1, 1, 0)
    r2 = await store.put(b"k", b"v2")
    kv = await store.get(b"k")
    assert kv is not None
    assert r2 == r1 + 1
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"v2", r1, r2, 2)


async def test_store_revision_advances_once_per_change(store: Store) -> None:
    r0 = await store.revision()
    assert await store.put(b"a", b"1") == r0 + 1
    assert await store.delete(b"missing") == 0
    assert await store.revision() == r0 + 1
    res = await store.txn([], [Put(key=b"b", value=b"1"), Put(key=b"c", value=b"1")])
    assert res.revision == r0 + 2
    res = await store.txn([], [Get(key=b"a")])
    assert res.revision == r0 + 2
    assert await store.revision() == r0 + 2


async def test_store_delete_single_and_prefix(store: Store) -> None:
    for k in (b"p/1", b"p/2", b"p/3", b"q/1"):
        await store.put(k, b"x")
    assert await store.delete(b"p/1") == 1
    assert await store.delete(b"p/1") == 0
    assert await store.delete(b"p/", prefix=True) == 2
    assert [kv.key for kv in (await store.range(b"")).kvs] == [b"q/1"]
    assert await store.delete(b"", prefix=True) == 1
    assert (await store.range(b"")).kvs == []


async def test_store_range_prefix_limit_and_start(store: Store) -> None:
    for k in (b"a/5", b"a/1", b"a/3", b"a/2", b"a/4", b"b/1", b"a"):
        await store.put(k, k)
    res = await store.range(b"a/")
    assert [kv.key for kv in res.kvs] == [b"a/1", b"a/2", b"a/3", b"a/4", b"a/5"]
    assert res.revision == await store.revision()
    assert not res.more
    page = await store.range(b"a/", limit=2)
    assert ([kv.key for kv in page.kvs], page.more) == ([b"a/1", b"a/2"], True)
    page = await store.range(b"a/", limit=2, start=page.kvs[-1].key + b"\0")
    assert ([kv.key for kv in page.kvs], page.more) == ([b"a/3", b"a/4"], True)
    page = await store.range(b"a/", limit=2, start=b"a/5")
    assert ([kv.key for kv in page.kvs], page.more) == ([b"a/5"], False)
    assert (await store.range(b"a/", start=b"a/9")).kvs == []
    assert (await store.range(b"a/", start=b"zzz")).kvs == []
    assert len((await store.range(b"a/", start=b"0")).kvs) == 5
    assert len((await store.range(b"")).kvs) == 7
    assert [kv.key for kv in (await store.range(b"", limit=1)).kvs] == [b"a"]


async def test_store_empty_key_is_invalid(store: Store) -> None:
    with pytest.raises(InvalidArgument):
        await store.put(b"", b"x")


# -- txn -----------------------------------------------------------------------


async def test_store_txn_success_branch_responses(store: Store) -> None:
    await store.put(b"t/a", b"1")
    await store.put(b"t/b", b"2")
    res = await store.txn(
        [Compare(key=b"t/a", target="value", op="==", value=b"1")],
        [Get(key=b"t/", prefix=True), Put(key=b"t/c", value=b"3"), Delete(key=b"t/a"), Get(key=b"t/c")],
        [Put(key=b"t/failed", value=b"x")],
    )
    assert res.succeeded
    assert [[kv.key for kv in r] for r in res.responses] == [[b"t/a", b"t/b"], [], [b"t/a"], [b"t/c"]]
    assert res.responses[2][0].value == b"1"  # a Delete returns the removed kv
    assert res.responses[3][0].mod_revision == res.revision  # reads see earlier writes
    assert await store.get(b"t/failed") is None


async def test_store_txn_failure_branch_runs_when_a_compare_fails(store: Store) -> None:
    rev = await store.put(b"t/a", b"1")
    res = await store.txn(
        [
            Compare(key=b"t/a", target="mod", op="==", value=rev),
            Compare(key=b"t/a", target="value", op="==", value=b"other"),
        ],
        [Put(key=b"t/ok", value=b"x")],
        [Get(key=b"t/a"), Delete(key=b"t/", prefix=True)],
    )
    assert not res.succeeded
    assert [kv.value for kv in res.responses[0]] == [b"1"]
    assert [kv.key for kv in res.responses[1]] == [b"t/a"]
    assert (await store.range(b"t/")).kvs == []


async def test_store_txn_every_compare_target_and_op(store: Store) -> None:
    lease = await store.lease_grant(30)
    r1 = await store.put(b"c", b"m", lease=lease)
    r2 = await store.put(b"c", b"m", lease=lease)  # version 2, create r1, mod r2
    actual: dict[str, Any] = {"create": r1, "mod": r2, "version": 2, "value": b"m", "lease": lease}
    for target, v in actual.items():
        lo, hi = (b"a", b"z") if target == "value" else (v - 1, v + 1)
        cases = [
            ("==", v, True),
            ("==", hi, False),
            ("!=", hi, True),
            ("!=", v, False),
            ("<", hi, True),
            ("<", v, False),
            (">", lo, True),
            (">", v, False),
        ]
        for op, value, expected in cases:
            res = await store.txn([Compare(key=b"c", target=target, op=op, value=value)], [], [])  # type: ignore[arg-type]
            assert res.succeeded is expected, (target, op, value)
    await store.lease_revoke(lease)


async def test_store_txn_compare_on_missing_key(store: Store) -> None:
    async def holds(target: str, op: str, value: int | bytes) -> bool:
        res = await store.txn([Compare(key=b"nope", target=target, op=op, value=value)], [])  # type: ignore[arg-type]
        return res.succeeded

    assert await holds("create", "==", 0)
    assert await holds("mod", "==", 0)
    assert await holds("version", "==", 0)
    assert await holds("lease", "==", 0)
    # etcd: a value compare on a missing key never holds
    assert not await holds("value", "==", b"")
    assert not await holds("value", "!=", b"x")


async def test_store_txn_get_prefix_with_limit(store: Store) -> None:
    for i in range(5):
        await store.put(b"g/%d" % i, b"x")
    res = await store.txn([], [Get(key=b"g/", prefix=True, limit=2), Get(key=b"g/4"), Get(key=b"g/9")])
    assert [[kv.key for kv in r] for r in res.responses] == [[b"g/0", b"g/1"], [b"g/4"], []]


async def test_store_put_moves_a_key_between_leases(store: Store) -> None:
    first, second = await store.lease_grant(30), await store.lease_grant(30)
    await store.put(b"mv", b"1", lease=first)
    rev = await store.put(b"mv", b"2", lease=second)
    events = await next_batch(store.watch(b"mv", start_revision=rev))
    assert events[0].kv.lease == second
    await store.lease_revoke(first)
    kv = await store.get(b"mv")
    assert kv is not None
    assert kv.lease == second
    await store.lease_revoke(second)
    assert await store.get(b"mv") is None


async def test_store_txn_rejects_duplicate_keys_and_too_many_ops(store: Store) -> None:
    with pytest.raises(InvalidArgument):
        await store.txn([], [Put(key=b"d", value=b"1"), Put(key=b"d", value=b"2")])
    with pytest.raises(InvalidArgument):
        await store.txn([], [Put(key=b"d/1", value=b"1"), Delete(key=b"d/", prefix=True)])
    with pytest.raises(InvalidArgument):
        await store.txn([], [Put(key=b"x%d" % i, value=b"") for i in range(129)])
    res = await store.txn([], [Put(key=b"x%d" % i, value=b"") for i in range(128)])
    assert res.succeeded
    with pytest.raises(InvalidArgument):
        await store.txn([Compare(key=b"d", target="mod", op="==", value=b"not an int")], [])


async def test_store_put_on_unknown_lease_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.put(b"k", b"v", lease=0x1234_5678)
    with pytest.raises(NotFound):
        await store.txn([], [Put(key=b"k", value=b"v", lease=0x1234_5678)])
    assert await store.get(b"k") is None


async def test_store_concurrent_claims_one_wins(store_factory: StoreFactory) -> None:
    a, b = await store_factory(), await store_factory()

    async def claim(s: Store, key: bytes, who: bytes) -> bool:
        res = await s.txn(
            [Compare(key=key, target="create", op="==", value=0)], [Put(key=key, value=who)], [Get(key=key)]
        )
        return res.succeeded

    for i in range(20):
        key = b"claims/%d" % i
        won = await asyncio.gather(claim(a, key, b"a"), claim(b, key, b"b"))
        assert sorted(won) == [False, True]
        kv = await a.get(key)
        assert kv is not None
        assert kv.value == (b"a" if won[0] else b"b")
        assert kv.version == 1


# -- leases --------------------------------------------------------------------


async def test_store_lease_expiry_deletes_keys_and_emits_delete(store: Store) -> None:
    lease = await store.lease_grant(1)
    rev = await store.put(b"l/a", b"1", lease=lease)
    await store.put(b"l/b", b"1", lease=lease)
    await store.put(b"l/keep", b"1")
    events = await take(store.watch(b"l/", start_revision=rev + 3), 2)
    assert sorted((e.type, e.kv.key) for e in events) == [("delete", b"l/a"), ("delete", b"l/b")]
    assert events[0].revision == events[1].revision == events[0].kv.mod_revision
    assert [kv.key for kv in (await store.range(b"l/")).kvs] == [b"l/keep"]
    with pytest.raises(NotFound):
        await store.lease_keepalive(lease)


async def test_store_lease_keepalive_extends(store: Store) -> None:
    lease = await store.lease_grant(1)
    await store.put(b"ka", b"1", lease=lease)
    for _ in range(6):  # 1.8 s in all, well past the TTL, renewing at TTL/3
        await asyncio.sleep(0.3)
        assert await store.lease_keepalive(lease) >= 1
    kv = await store.get(b"ka")
    assert kv is not None
    assert kv.lease == lease
    await store.lease_revoke(lease)


async def test_store_lease_revoke_deletes_keys_and_is_idempotent(store: Store) -> None:
    lease = await store.lease_grant(30)
    await store.put(b"r/1", b"1", lease=lease)
    await store.put(b"r/2", b"1", lease=lease)
    await store.put(b"r/2", b"2")  # re-put without the lease detaches it
    rev = await store.revision()
    await store.lease_revoke(lease)
    assert [kv.key for kv in (await store.range(b"r/")).kvs] == [b"r/2"]
    assert await store.revision() == rev + 1
    await store.lease_revoke(lease)
    with pytest.raises(NotFound):
        await store.lease_keepalive(lease)


# -- watch ---------------------------------------------------------------------


async def test_store_watch_replays_from_past_revision(store: Store) -> None:
    r1 = await store.put(b"w/a", b"1")
    await store.put(b"other", b"x")
    await store.put(b"w/a", b"2")
    await store.txn([], [Put(key=b"w/b", value=b"1"), Delete(key=b"w/a")])
    events = await take(store.watch(b"w/", start_revision=r1), 4)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        ("put", b"w/a", r1),
        ("put", b"w/a", r1 + 2),
        ("put", b"w/b", r1 + 3),
        ("delete", b"w/a", r1 + 3),
    ]
    assert events[1].kv.value == b"2"
    assert events[1].kv.version == 2
    assert events[3].kv.mod_revision == r1 + 3


async def test_store_watch_from_now_skips_history(store: Store) -> None:
    await store.put(b"n/old", b"x")
    it = store.watch(b"n/")
    first = asyncio.ensure_future(next_batch(it))
    i = 0
    while not first.done():  # the watch starts at some moment; write until it sees a write
        await store.put(b"n/new%d" % i, b"x")
        i += 1
        await asyncio.wait({first}, timeout=0.05)
    batch = first.result()
    assert batch
    assert all(e.kv.key.startswith(b"n/new") for e in batch)


async def test_store_many_watchers_see_the_same_events(store: Store) -> None:
    start = await store.revision() + 1
    mine = [store.watch(b"m/", start_revision=start) for _ in range(20)]
    others = [store.watch(b"o/", start_revision=start) for _ in range(5)]
    for i in range(10):
        await store.put(b"m/%d" % i, b"x")
        await store.put(b"o/%d" % i, b"y")
    seen = await asyncio.gather(*(take(w, 10) for w in mine))
    assert all([e.kv.key for e in s] == [b"m/%d" % i for i in range(10)] for s in seen)
    seen = await asyncio.gather(*(take(w, 10) for w in others))
    assert all([e.kv.value for e in s] == [b"y"] * 10 for s in seen)
    for w in mine + others:
        await w.aclose()  # type: ignore[attr-defined]


async def test_store_compaction_raises_compacted(store: Store) -> None:
    assert isinstance(store, MemoryStore | EtcdStore)
    r1 = await store.put(b"cp/a", b"1")
    r2 = await store.put(b"cp/a", b"2")
    r3 = await store.put(b"cp/a", b"3")
    await store.compact(r2)
    with pytest.raises(Compacted) as info:
        await next_batch(store.watch(b"cp/", start_revision=r1))
    assert info.value.compact_revision == r2
    events = await take(store.watch(b"cp/", start_revision=r2), 2)
    assert [e.revision for e in events] == [r2, r3]
    with pytest.raises(Compacted):
        await store.compact(r2)


async def test_store_close_ends_pending_watches(store_factory: StoreFactory) -> None:
    s = await store_factory()
    it = s.watch(b"z/")
    pending = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.1)
    await s.close()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(WAIT):
            await pending
    with pytest.raises(Unavailable):
        await s.get(b"z/a")


# -- etcd only -----------------------------------------------------------------


@pytest.mark.integration
async def test_etcd_store_watch_survives_restart(own_etcd: EtcdServer) -> None:
    store = await EtcdStore.connect(own_etcd.url)
    try:
        r1 = await store.put(b"s/before", b"1")
        it = store.watch(b"s/", start_revision=r1)
        assert [e.kv.key for e in await next_batch(it)] == [b"s/before"]
        await asyncio.to_thread(own_etcd.restart, down_for=0.5)
        await store.put(b"s/after", b"2")  # unary calls recover by themselves
        assert [e.kv.key for e in await take(it, 1)] == [b"s/after"]
        own_etcd.kill()  # a crash this time, with the watch idle
        await asyncio.to_thread(own_etcd.start)
        await store.put(b"s/after-crash", b"3")
        assert [e.kv.key for e in await take(it, 1)] == [b"s/after-crash"]
    finally:
        await store.close()


@pytest.mark.integration
async def test_etcd_store_unary_calls_recover_after_restart(own_etcd: EtcdServer) -> None:
    store = EtcdStore(own_etcd.url, request_timeout=0.5)
    try:
        await store.put(b"u", b"1")
        await asyncio.to_thread(own_etcd.stop, remove=False)
        with pytest.raises(Unavailable):
            await store.get(b"u")
        await asyncio.to_thread(own_etcd.start)
        async with asyncio.timeout(WAIT):
            while True:  # the channel reconnects on its own backoff; no new store needed
                try:
                    kv = await store.get(b"u")
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
        assert kv is not None
        assert kv.value == b"1"
    finally:
        await store.close()


@pytest.mark.integration
async def test_etcd_store_connect_unreachable_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await EtcdStore.connect(f"http://127.0.0.1:{free_port()}", request_timeout=0.3)


@pytest.mark.integration
async def test_etcd_store_tries_each_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = await EtcdStore.connect([dead, etcd_server.url])
    try:
        assert await store.revision() > 0
    finally:
        await store.close()


@pytest.mark.integration
async def test_etcd_store_lease_keepalive_when_etcd_down_is_unavailable(own_etcd: EtcdServer) -> None:
    store = EtcdStore(own_etcd.url, request_timeout=0.5)
    try:
        lease = await store.lease_grant(30)
        assert await store.lease_keepalive(lease) >= 30
        await asyncio.to_thread(own_etcd.stop, remove=False)
        with pytest.raises(Unavailable):
            await store.lease_keepalive(lease)
        await asyncio.to_thread(own_etcd.start)
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    assert await store.lease_keepalive(lease) >= 30
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)
    finally:
        await store.close()


# -- MemoryStore only ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_lease_expiry_follows_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = await store.lease_grant(10)
    rev = await store.put(b"k", b"v", lease=lease)
    clock.now += 9.9
    assert await store.get(b"k") is not None
    assert await store.lease_keepalive(lease) == 10
    clock.now += 9.9
    assert await store.get(b"k") is not None
    clock.now += 0.1
    assert await store.get(b"k") is None
    events = await next_batch(store.watch(b"", start_revision=rev + 1))
    assert [(e.type, e.kv.key) for e in events] == [("delete", b"k")]
    await store.close()


async def test_memory_store_history_is_bounded() -> None:
    store = MemoryStore(max_history=5)
    first = await store.put(b"h", b"0")
    for i in range(9):
        await store.put(b"h", b"%d" % i)
    with pytest.raises(Compacted):
        await next_batch(store.watch(b"h", start_revision=first))
    assert len(await take(store.watch(b"h", start_revision=first + 5), 5)) == 5
    await store.close()


def test_open_store_picks_the_implementation() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("etcd://127.0.0.1:2379,127.0.0.1:22379"), EtcdStore)
    assert isinstance(open_store("http://127.0.0.1:2379"), EtcdStore)
    for bad in ("127.0.0.1:2379", "redis://x", "etcd://"):
        with pytest.raises(InvalidArgument):
            open_store(bad)


# -- election ------------------------------------------------------------------


class Partitionable:
    """A Store whose keepalives can be cut, as if this client lost etcd."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.cut = False

    async def lease_keepalive(self, lease: int) -> float:
        if self.cut:
            raise Unavailable("partitioned")
        return await self.inner.lease_keepalive(lease)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def first_leader(tasks: dict[asyncio.Task[None], Election]) -> Election:
    done, _ = await asyncio.wait(tasks, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    task = done.pop()
    task.result()
    return tasks.pop(task)


async def test_election_one_leader_among_three(store_factory: StoreFactory) -> None:
    elections = [Election(await store_factory(), "one", value=b"c%d" % i, ttl=5) for i in range(3)]
    tasks = {asyncio.ensure_future(e.campaign()): e for e in elections}
    leader = await first_leader(tasks)
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in tasks)
    assert [e.is_leader for e in elections].count(True) == 1
    current = await leader.leader()
    assert current is not None
    assert current.value == leader._value
    for t in tasks:
        t.cancel()
    for e in elections:
        await e.resign()


async def test_election_leadership_passes_on_resign(store_factory: StoreFactory) -> None:
    elections = [Election(await store_factory(), "resign", ttl=5) for _ in range(3)]
    tasks = {asyncio.ensure_future(e.campaign()): e for e in elections}
    first = await first_leader(tasks)
    await first.resign()
    assert first.lost.is_set()
    assert not first.is_leader
    second = await first_leader(tasks)
    assert second.is_leader
    await second.resign()
    third = await first_leader(tasks)
    assert third.is_leader
    await third.resign()


async def test_election_leadership_passes_when_lease_expires(store_factory: StoreFactory) -> None:
    cut = Partitionable(await store_factory())
    old = Election(cut, "expire", ttl=1)
    await old.campaign()
    new = Election(await store_factory(), "expire", ttl=1)
    waiting = asyncio.ensure_future(new.campaign())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    cut.cut = True  # the old leader can no longer renew
    async with asyncio.timeout(WAIT):
        await old.lost.wait()
        await waiting
    assert not old.is_leader
    assert new.is_leader
    await new.resign()
    await old.resign()


async def test_lease_keeper_keeps_alive_and_signals_loss(store: Store) -> None:
    keeper = LeaseKeeper(store, ttl=1)
    lease = await keeper.start()
    await store.put(b"kept", b"1", lease=lease)
    await asyncio.sleep(1.5)
    assert await store.get(b"kept") is not None
    assert not keeper.lost.is_set()
    await store.lease_revoke(lease)  # someone else ends it
    async with asyncio.timeout(WAIT):
        await keeper.lost.wait()
    await keeper.stop()
