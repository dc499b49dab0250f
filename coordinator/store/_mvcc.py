"""The synchronous core of ``MemoryStore``: keys, revisions, leases, event history.

No asyncio and no clock here: every call that needs the time takes ``now``.
Semantics follow etcd v3.4 exactly where the contract suite can tell (see
tests/contract/test_store.py), including its request checks: empty keys,
``max_txn_ops`` per branch, a key written twice in one branch, puts on unknown
leases, and a ``value`` compare on a missing key that never holds.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left, insort
from collections.abc import Sequence
from typing import Final

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
    TxnResult,
    WatchEvent,
    prefix_end,
    request_too_large,
)
from tide.api.errors import InvalidArgument, NotFound

__all__ = ["MvccCore"]

MAX_BATCH: Final = 1000  # events per watch batch (a revision is never split)


class _Lease:
    __slots__ = ("deadline", "keys", "ttl")

    def __init__(self, ttl: float, deadline: float) -> None:
        self.ttl = ttl
        self.deadline = deadline
        self.keys: set[bytes] = set()


def _check_key(key: bytes) -> None:
    if not key:
        raise InvalidArgument("key is not provided (empty keys are invalid, as in etcd)")


def _compare_holds(c: Compare, kv: KeyValue | None) -> bool:
    if c.target == "value":
        if not isinstance(c.value, bytes):
            raise InvalidArgument(f"compare on value needs bytes, got {type(c.value).__name__}")
        if kv is None:
            return False  # etcd: a value compare on a missing key always fails
        actual: int | bytes = kv.value
    else:
        if not isinstance(c.value, int):
            raise InvalidArgument(f"compare on {c.target} needs an int, got {type(c.value).__name__}")
        if kv is None:
            actual = 0
        elif c.target == "create":
            actual = kv.create_revision
        elif c.target == "mod":
            actual = kv.mod_revision
        elif c.target == "version":
            actual = kv.version
        else:
            actual = kv.lease
    match c.op:
        case "==":
            return actual == c.value
        case "!=":
            return actual != c.value
        case "<":
            return actual < c.value  # type: ignore[operator]
        case ">":
            return actual > c.value  # type: ignore[operator]
    raise InvalidArgument(f"unknown compare op {c.op!r}")


def _check_branch(ops: Sequence[Op], max_ops: int) -> None:
    """etcd's request checks: op count, request size, and no key written twice in one branch."""
    if len(ops) > max_ops:
        raise InvalidArgument(f"too many operations in txn request ({len(ops)} > {max_ops})")
    if sum(len(op.key) + len(op.value) for op in ops if isinstance(op, Put)) > MAX_REQUEST_BYTES:
        raise request_too_large()  # as etcd would: dev code that fits here fits there
    puts: set[bytes] = set()
    deletes: list[Delete] = []
    for op in ops:
        if not (isinstance(op, Get | Delete) and op.prefix):
            _check_key(op.key)
        if isinstance(op, Put):
            if op.key in puts:
                raise InvalidArgument("duplicate key given in txn request")
            puts.add(op.key)
        elif isinstance(op, Delete):
            deletes.append(op)
    for d in deletes:
        for k in puts:
            if k == d.key or (d.prefix and k.startswith(d.key)):
                raise InvalidArgument("duplicate key given in txn request")


class MvccCore:
    """Current key space + bounded per-revision history + leases.  Not thread-safe."""

    def __init__(self, *, max_history: int, max_txn_ops: int) -> None:
        self.revision = 1  # as etcd: an empty store is at revision 1
        self.compact_revision = 0  # history below this revision is gone
        self._keys: list[bytes] = []  # sorted, for ranges
        self._kvs: dict[bytes, KeyValue] = {}
        self._history: dict[int, list[WatchEvent]] = {}
        self._history_first = 2  # oldest revision still in _history
        self._max_history = max_history
        self._max_txn_ops = max_txn_ops
        self._leases: dict[int, _Lease] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap; stale entries skipped lazily
        self._lease_ids = itertools.count(0x7E1D_0000_0001)

    # -- reads ---------------------------------------------------------------

    def get(self, key: bytes) -> KeyValue | None:
        _check_key(key)
        return self._kvs.get(key)

    def _span(self, prefix: bytes, start: bytes | None = None) -> tuple[int, int]:
        lo_key = max(prefix, start) if start is not None else prefix
        lo = bisect_left(self._keys, lo_key)
        hi = bisect_left(self._keys, prefix_end(prefix)) if prefix else len(self._keys)
        return lo, max(lo, hi)

    def range(self, prefix: bytes, *, limit: int = 0, start: bytes | None = None) -> RangeResult:
        lo, hi = self._span(prefix, start)
        more = 0 < limit < hi - lo
        if more:
            hi = lo + limit
        kvs = [self._kvs[k] for k in self._keys[lo:hi]]
        return RangeResult(kvs=kvs, revision=self.revision, more=more)

    # -- writes --------------------------------------------------------------

    def _put(self, op: Put, rev: int, events: list[WatchEvent]) -> None:
        old = self._kvs.get(op.key)
        if old is None:
            create, version = rev, 1
            insort(self._keys, op.key)
        else:
            create, version = old.create_revision, old.version + 1
            if old.lease and old.lease != op.lease and old.lease in self._leases:
                self._leases[old.lease].keys.discard(op.key)
        kv = KeyValue(
            key=op.key,
            value=op.value,
            create_revision=create,
            mod_revision=rev,
            version=version,
            lease=op.lease,
        )
        self._kvs[op.key] = kv
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        events.append(WatchEvent(type="put", kv=kv, revision=rev))

    def _delete(self, key: bytes, prefix: bool, rev: int, events: list[WatchEvent]) -> list[KeyValue]:
        if prefix:
            lo, hi = self._span(key)
            victims = self._keys[lo:hi]
            del self._keys[lo:hi]
        elif key in self._kvs:
            victims = [key]
            del self._keys[bisect_left(self._keys, key)]
        else:
            return []
        removed = []
        for k in victims:
            kv = self._kvs.pop(k)
            if kv.lease and kv.lease in self._leases:
                self._leases[kv.lease].keys.discard(k)
            removed.append(kv)
            tomb = KeyValue(key=k, value=b"", create_revision=0, mod_revision=rev, version=0)
            events.append(WatchEvent(type="delete", kv=tomb, revision=rev))
        return removed

    def _commit(self, rev: int, events: list[WatchEvent]) -> None:
        if not events:
            return
        self.revision = rev
        self._history[rev] = events
        while len(self._history) > self._max_history:
            del self._history[self._history_first]
            self._history_first += 1
            self.compact_revision = self._history_first

    def put(self, key: bytes, value: bytes, lease: int, events: list[WatchEvent]) -> int:
        _check_key(key)
        if lease and lease not in self._leases:
            raise NotFound(f"requested lease not found: {lease:x}")
        rev = self.revision + 1
        self._put(Put(key=key, value=value, lease=lease), rev, events)
        self._commit(rev, events)
        return rev

    def delete(self, key: bytes, prefix: bool, events: list[WatchEvent]) -> int:
        if not prefix:
            _check_key(key)
        rev = self.revision + 1
        removed = self._delete(key, prefix, rev, events)
        self._commit(rev, events)
        return len(removed)

    def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
        events: list[WatchEvent],
    ) -> TxnResult:
        if len(compares) > self._max_txn_ops:
            raise InvalidArgument(f"too many operations in txn request ({len(compares)} compares)")
        _check_branch(success, self._max_txn_ops)
        _check_branch(failure, self._max_txn_ops)
        for c in compares:
            _check_key(c.key)
        ok = all(_compare_holds(c, self._kvs.get(c.key)) for c in compares)
        ops = success if ok else failure
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise NotFound(f"requested lease not found: {op.lease:x}")
        rev = self.revision + 1
        responses: list[list[KeyValue]] = []
        for op in ops:
            if isinstance(op, Put):
                self._put(op, rev, events)
                responses.append([])
            elif isinstance(op, Delete):
                responses.append(self._delete(op.key, op.prefix, rev, events))
            elif op.prefix:
                responses.append(self.range(op.key, limit=op.limit).kvs)
            else:
                kv = self._kvs.get(op.key)
                responses.append([kv] if kv is not None else [])
        self._commit(rev, events)
        return TxnResult(succeeded=ok, revision=self.revision, responses=responses)

    def compact(self, revision: int) -> None:
        if revision <= self.compact_revision:
            raise Compacted(
                f"revision {revision} is already compacted", compact_revision=self.compact_revision
            )
        if revision > self.revision:
            raise InvalidArgument(f"cannot compact future revision {revision} (now {self.revision})")
        for rev in range(self._history_first, revision):
            self._history.pop(rev, None)
        self._history_first = max(self._history_first, revision)
        self.compact_revision = revision

    # -- history -------------------------------------------------------------

    def events_since(self, next_rev: int, prefix: bytes) -> tuple[list[WatchEvent], int]:
        """Events under ``prefix`` from ``next_rev`` on, and the next revision to read."""
        if next_rev < self.compact_revision:
            raise Compacted(
                f"watch from revision {next_rev}: history before {self.compact_revision} was compacted",
                compact_revision=self.compact_revision,
            )
        out: list[WatchEvent] = []
        rev = max(next_rev, self._history_first)
        while rev <= self.revision and len(out) < MAX_BATCH:
            out.extend(e for e in self._history[rev] if e.kv.key.startswith(prefix))
            rev += 1
        return out, max(rev, next_rev)

    # -- leases --------------------------------------------------------------

    def lease_grant(self, ttl: float, now: float) -> int:
        if ttl <= 0:
            raise InvalidArgument(f"lease TTL must be positive, got {ttl}")
        lease = next(self._lease_ids)
        self._leases[lease] = _Lease(ttl, now + ttl)
        heapq.heappush(self._deadlines, (now + ttl, lease))
        return lease

    def lease_keepalive(self, lease: int, now: float) -> float:
        entry = self._leases.get(lease)
        if entry is None:
            raise NotFound(f"lease {lease:x} not found or expired")
        entry.deadline = now + entry.ttl
        heapq.heappush(self._deadlines, (entry.deadline, lease))
        return entry.ttl

    def lease_revoke(self, lease: int, events: list[WatchEvent]) -> None:
        entry = self._leases.pop(lease, None)
        if entry is None:
            return
        rev = self.revision + 1
        for key in sorted(entry.keys):
            self._delete(key, False, rev, events)
        self._commit(rev, events)

    def next_deadline(self) -> float | None:
        """The earliest lease deadline, or None without leases."""
        while self._deadlines:
            deadline, lease = self._deadlines[0]
            entry = self._leases.get(lease)
            if entry is not None and entry.deadline == deadline:
                return deadline
            heapq.heappop(self._deadlines)  # stale: renewed or revoked since
        return None

    def expire(self, now: float) -> list[list[WatchEvent]]:
        """Revoke every lease due at ``now``; one revision (one event list) per lease."""
        out: list[list[WatchEvent]] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, lease = heapq.heappop(self._deadlines)
            events: list[WatchEvent] = []
            self.lease_revoke(lease, events)
            if events:
                out.append(events)
        return out
