"""Fixtures for the Store contract suite: one parametrized ``store_factory`` over
MemoryStore, a real etcd, and a real etcd that speaks only TLS with client
certificates (both marked ``integration``; skipped without the binaries)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from coordinator.store import EtcdStore, EtcdTls, MemoryStore, Store
from tests.fixtures.etcd import (
    ETCD_MISSING,
    OPENSSL_MISSING,
    EtcdPki,
    EtcdServer,
    etcd_binary,
    openssl_binary,
)

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


@pytest.fixture(scope="session")
def etcd_tls_server() -> Iterator[EtcdServer]:
    """One TLS-only etcd (--client-cert-auth) for the whole session; tests wipe its keys."""
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    if openssl_binary() is None:
        pytest.skip(OPENSSL_MISSING)
    server = EtcdServer(tls=True)
    server.start()
    yield server
    server.stop()


def client_tls(pki: EtcdPki | None) -> EtcdTls:
    """The client side of a test PKI: its CA and client certificate."""
    assert pki is not None
    return EtcdTls(ca=pki.ca.read_bytes(), cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes())


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd for one test alone, for fault tests that restart or stop it."""
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    server = EtcdServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("etcd", marks=pytest.mark.integration),
        pytest.param("etcd-tls", marks=pytest.mark.integration),
    ]
)
async def store_factory(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Makes clients of ONE store (several clients share one etcd, or one MemoryStore)."""
    made: list[Store] = []
    if request.param == "memory":
        shared = MemoryStore()
        made.append(shared)

        async def factory() -> Store:
            return shared

    else:
        tls = request.param == "etcd-tls"
        server: EtcdServer = request.getfixturevalue("etcd_tls_server" if tls else "etcd_server")
        options = client_tls(server.pki) if tls else None
        wiper = await EtcdStore.connect(server.url, tls=options)
        await wiper.delete(b"", prefix=True)
        made.append(wiper)

        async def factory() -> Store:
            client = await EtcdStore.connect(server.url, tls=options)
            made.append(client)
            return client

    yield factory
    for s in made:
        await s.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()
