"""The Store protocol (etcd v3 semantics), its implementations, and election on top.

``open_store(url)`` picks an implementation from a URL: ``memory://`` for the
in-process store, ``etcd://host:port[,host:port...]`` or ``http://host:port``
for etcd.
"""

from coordinator.store._election import Election, LeaseKeeper
from coordinator.store._etcd import EtcdStore
from coordinator.store._memory import MemoryStore
from coordinator.store._protocol import (
    Compacted,
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    RangeResult,
    Store,
    TxnResult,
    WatchEvent,
    prefix_end,
)
from tide.api.errors import InvalidArgument

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "Election",
    "EtcdStore",
    "Get",
    "KeyValue",
    "LeaseKeeper",
    "MemoryStore",
    "Op",
    "Put",
    "RangeResult",
    "Store",
    "TxnResult",
    "WatchEvent",
    "open_store",
    "prefix_end",
]


def open_store(url: str) -> Store:
    """A Store for ``url``; no I/O happens until its first call.

    ``memory://`` → ``MemoryStore``; ``etcd://h:p[,h:p]`` and
    ``http://h:p[,http://h:p]`` → ``EtcdStore`` over those endpoints.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidArgument(f"store URL needs a scheme (memory://, etcd://, http://): {url!r}")
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("etcd", "http"):
        hosts = [h.strip().removeprefix("http://").rstrip("/") for h in rest.split(",") if h.strip()]
        if not hosts:
            raise InvalidArgument(f"store URL names no etcd endpoint: {url!r}")
        return EtcdStore([f"http://{h}" for h in hosts])
    raise InvalidArgument(f"unknown store URL scheme {scheme!r} in {url!r}")
