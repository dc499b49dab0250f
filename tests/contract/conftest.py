"""Fixtures for the Store contract suite: one parametrized ``store_factory`` over
MemoryStore and a real etcd (marked ``integration``; skipped without the binary)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from coordinator.store import EtcdStore, MemoryStore, Store
from tests.fixtures.etcd import ETCD_MISSING, EtcdServer, etcd_binary

StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for the whole session; tests wipe its keys, never restart it."""
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    server = EtcdServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd for one test alone, for fault tests that restart or stop it."""
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    server = EtcdServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", pytest.param("etcd", marks=pytest.mark.integration)])
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Makes clients of ONE store (several clients share one etcd, or one MemoryStore)."""
    made: list[Store] = []
    if request.param == "memory":
        shared = MemoryStore()
        made.append(shared)

        async def factory() -> Store:
            return shared

    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        wiper = await EtcdStore.connect(server.url)
        await wiper.delete(b"", prefix=True)
        made.append(wiper)

        async def factory() -> Store:
            client = await EtcdStore.connect(server.url)
            made.append(client)
            return client

    yield factory
    for s in made:
        await s.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()
