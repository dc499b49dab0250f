"""The Store protocol (etcd v3 semantics), its implementations, and election on top.

``open_store(url)`` picks an implementation from a URL: ``memory://`` for the
in-process store, ``etcd://host:port[,host:port...]`` (or ``http://``) for
plaintext etcd, ``etcds://host:port[,host:port...]`` (or ``https://``) for etcd
over TLS with the CA, client certificate and server name in ``EtcdTls``.
"""

from coordinator.store._election import Election, LeaseKeeper
from coordinator.store._etcd import EtcdStore
from coordinator.store._etcd_tls import EtcdTls
from coordinator.store._memory import MemoryStore
from coordinator.store._protocol import (
    MAX_REQUEST_BYTES,
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
    request_too_large,
)
from tide.api.errors import InvalidArgument

__all__ = [
    "MAX_REQUEST_BYTES",
    "Compacted",
    "Compare",
    "Delete",
    "Election",
    "EtcdStore",
    "EtcdTls",
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
    "request_too_large",
]


_PLAIN_SCHEMES = ("etcd", "http")
_TLS_SCHEMES = ("etcds", "https")


def open_store(url: str, *, tls: EtcdTls | None = None) -> Store:
    """A Store for ``url``; no I/O happens until its first call.

    ``memory://`` → ``MemoryStore``; ``etcd://h:p[,h:p]`` and
    ``http://h:p[,http://h:p]`` → plaintext ``EtcdStore`` over those endpoints;
    ``etcds://h:p[,h:p]`` and ``https://h:p[,https://h:p]`` → ``EtcdStore`` over
    TLS with ``tls`` (None: public roots, no client certificate).  The scheme
    alone selects TLS: ``tls`` with a plaintext URL is an error, not a downgrade.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidArgument(f"store URL needs a scheme (memory://, etcd://, etcds://): {url!r}")
    if scheme == "memory":
        if tls is not None:
            raise InvalidArgument(f"TLS settings given for an in-process store: {url!r}")
        return MemoryStore()
    if scheme not in _PLAIN_SCHEMES + _TLS_SCHEMES:
        raise InvalidArgument(f"unknown store URL scheme {scheme!r} in {url!r}")
    secure = scheme in _TLS_SCHEMES
    if tls is not None and not secure:
        raise InvalidArgument(f"TLS settings given, but {url!r} is plaintext: use etcds://host:port")
    hosts = []
    for h in (h.strip() for h in rest.split(",")):
        if not h:
            continue
        own, _, bare = h.rpartition("://")
        if own and (own in _TLS_SCHEMES) != secure:
            raise InvalidArgument(f"store URL {url!r} mixes plaintext and TLS endpoints")
        hosts.append(f"{'https' if secure else 'http'}://{bare.rstrip('/')}")
    if not hosts:
        raise InvalidArgument(f"store URL names no etcd endpoint: {url!r}")
    return EtcdStore(hosts, tls=(tls or EtcdTls()) if secure else None)
