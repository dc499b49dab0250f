"""The Store: a narrow protocol over etcd v3 semantics.

Two implementations pass one contract suite (tests/contract/test_store.py):
``EtcdStore`` (production, over aetcd) and ``MemoryStore`` (in-process MVCC,
the embedded default for ``tide dev`` and unit tests).

Semantics, as etcd v3 defines them:

* Every write advances one global ``revision``.  A key's ``create_revision``
  is the revision that created it (0 = absent), ``mod_revision`` the last one
  that changed it, ``version`` the number of writes since creation.
* ``txn`` evaluates all ``compares`` atomically; if all hold it applies
  ``success`` ops, else ``failure`` ops, in one revision.  A compare on a
  missing key sees create_revision = mod_revision = version = 0; a *value*
  compare on a missing key always fails (as etcd does).
* Leases expire ``ttl`` seconds after the last grant/keepalive; expiry deletes
  every key attached to the lease (watchers see DELETE events).
* ``watch(prefix, start_revision)`` yields batches of events in revision order
  starting at ``start_revision`` (0 = from now).  It survives a server restart
  by itself (it resumes after the last revision it delivered).  A watch
  "from now" fixes its start when iteration begins: to miss nothing, read
  first, then watch from that read's revision + 1.  If history
  before ``start_revision`` was compacted it raises ``Compacted``; the caller
  re-lists and watches again from the list's revision + 1.

Concurrency: every method may be called concurrently from many tasks.
Errors: ``Unavailable`` when the server cannot be reached (retryable),
``NotFound`` for an unknown/expired lease, ``Compacted`` as above,
``PayloadTooLarge`` (``request_too_large()``) when a txn is over the request
limit (etcd's ``--max-request-bytes``, 1.5 MiB by default; ``MAX_REQUEST_BYTES``
for the in-process store): the store's own text never reaches a client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

import msgspec

from tide.api.errors import FailedPrecondition, PayloadTooLarge

__all__ = [
    "MAX_REQUEST_BYTES",
    "Compacted",
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "Op",
    "Put",
    "RangeResult",
    "Store",
    "TxnResult",
    "WatchEvent",
    "prefix_end",
    "request_too_large",
]

MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default


def request_too_large() -> PayloadTooLarge:
    """What a store raises for a txn over its request limit (one message for both stores)."""
    return PayloadTooLarge(
        "the data to store is larger than the store accepts in one request; "
        "send smaller fields (large inputs and outputs go to blob storage by themselves)"
    )


class Compacted(FailedPrecondition):
    """The requested watch revision was compacted away; re-list, then watch."""

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class KeyValue(msgspec.Struct, frozen=True, kw_only=True):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class RangeResult(msgspec.Struct, frozen=True, kw_only=True):
    kvs: list[KeyValue]
    revision: int  # the store revision the read was served at
    more: bool = False  # True when ``limit`` cut the result


class Compare(msgspec.Struct, frozen=True, kw_only=True):
    """``target`` of ``key`` ``op`` ``value``; e.g. mod_revision(k) == 42."""

    key: bytes
    target: Literal["create", "mod", "version", "value", "lease"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes


class Put(msgspec.Struct, frozen=True, kw_only=True):
    key: bytes
    value: bytes
    lease: int = 0


class Delete(msgspec.Struct, frozen=True, kw_only=True):
    key: bytes
    prefix: bool = False  # delete every key starting with ``key``


class Get(msgspec.Struct, frozen=True, kw_only=True):
    key: bytes
    prefix: bool = False
    limit: int = 0  # 0 = no limit


Op = Put | Delete | Get


class TxnResult(msgspec.Struct, frozen=True, kw_only=True):
    succeeded: bool
    revision: int
    # one entry per op of the branch that ran, in order: the KeyValues a Get
    # read, the KeyValues a Delete removed (prev kvs), [] for a Put.
    responses: list[list[KeyValue]]


class WatchEvent(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: key and mod_revision (= the delete's revision) are set
    revision: int  # revision of the change


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"  # etcd's "all keys" marker


class Store(Protocol):
    async def get(self, key: bytes) -> KeyValue | None:
        """One key, or None when absent."""
        ...

    async def range(self, prefix: bytes, *, limit: int = 0, start: bytes | None = None) -> RangeResult:
        """Keys starting with ``prefix`` in key order, from ``start`` (inclusive) if given."""
        ...

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Write one key; returns the new revision."""
        ...

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete one key (or a prefix); returns how many keys were deleted."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomic compare-and-apply, as etcd's Txn."""
        ...

    async def lease_grant(self, ttl: float) -> int:
        """A new lease id that expires ``ttl`` seconds from now unless kept alive."""
        ...

    async def lease_keepalive(self, lease: int) -> float:
        """Renew once; returns the TTL granted.  NotFound if it already expired."""
        ...

    async def lease_revoke(self, lease: int) -> None:
        """Expire now (keys deleted).  Unknown leases are ignored (idempotent)."""
        ...

    def watch(self, prefix: bytes, *, start_revision: int = 0) -> AsyncIterator[list[WatchEvent]]:
        """Batches of changes under ``prefix``; see the module docstring."""
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    async def close(self) -> None:
        """Release connections; pending watches end."""
        ...
