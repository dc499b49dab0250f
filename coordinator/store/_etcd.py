"""``EtcdStore``: the Store over etcd v3, the only module that imports ``aetcd``.

aetcd's high-level client lacks what the contract needs (range limits, lease
compares, a long-lived keepalive stream, resumable watches), so this adapter
speaks etcd's gRPC API through aetcd's generated stubs on ONE ``grpc.aio``
channel, shared by every call (no per-call connect).  grpc reconnects the
channel by itself; unary calls use ``wait_for_ready`` with a deadline, so a
call made while etcd restarts waits for it instead of failing at once.  When
such a deadline passes with the channel down, a fail-fast probe fetches grpc's
last connect error (refused, TLS handshake failed) for the ``Unavailable``.
The channel is plaintext or TLS (``EtcdTls``, see ``_etcd_tls``).

Watches are one gRPC stream each.  Each remembers the next revision it owes
its caller and, when the stream breaks (etcd restart: "Stream removed"),
reopens it from there with jittered backoff; ``Compacted`` surfaces only when
that revision is gone.  Keepalives share one ``LeaseKeepAlive`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Literal, final

import grpc
from aetcd import rpc

from coordinator.store._etcd_grpc import KeepAliveStream, grpc_target, translate
from coordinator.store._etcd_tls import EtcdTls, open_channel, plan_endpoints, unreachable_message
from coordinator.store._protocol import (
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
)
from tide.api.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    TideError,
    Unavailable,
)

__all__ = ["EtcdStore"]

log = logging.getLogger("tide.coordinator.store.etcd")

_CHANNEL_OPTIONS: Final = [
    # etcd is cluster-local: come back within seconds of a restart, not minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Detect half-open connections under long watches; etcd allows pings >= 5 s apart.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_receive_message_length", 64 << 20),
]
_TARGETS: Final = {
    "create": (rpc.Compare.CREATE, "create_revision"),
    "mod": (rpc.Compare.MOD, "mod_revision"),
    "version": (rpc.Compare.VERSION, "version"),
    "value": (rpc.Compare.VALUE, "value"),
    "lease": (rpc.Compare.LEASE, "lease"),
}
_RESULTS: Final = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_TxnRequest: Final = rpc.TxnRequest
_DELETE_EVENT: Final = rpc.Event.DELETE
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0


def _kv(p: Any) -> KeyValue:
    return KeyValue(
        key=p.key,
        value=p.value,
        create_revision=p.create_revision,
        mod_revision=p.mod_revision,
        version=p.version,
        lease=p.lease,
    )


def _span(prefix: bytes) -> tuple[bytes, bytes]:
    """etcd's (key, range_end) for a prefix; b"" means every key."""
    return (prefix, prefix_end(prefix)) if prefix else (b"\0", b"\0")


# The txn path is the coordinator's hottest: requests are filled in place
# (``repeated.add()`` and plain field sets) instead of building a message per
# op and copying it into its parent, which costs half as much with upb.
def _add_compares(dest: Any, compares: Sequence[Compare]) -> None:
    add = dest.add
    for c in compares:
        target, field = _TARGETS[c.target]
        if isinstance(c.value, bytes) != (c.target == "value"):
            raise InvalidArgument(f"compare on {c.target} got a {type(c.value).__name__} value")
        m = add()
        m.key = c.key
        m.target = target
        m.result = _RESULTS[c.op]
        setattr(m, field, c.value)


def _add_ops(dest: Any, ops: Sequence[Op]) -> None:
    add = dest.add
    for op in ops:
        if type(op) is Put:
            m = add().request_put
            m.key = op.key
            m.value = op.value
            if op.lease:
                m.lease = op.lease
            continue
        if type(op) is Delete:
            m = add().request_delete_range
            m.prev_kv = True
        elif type(op) is Get:
            m = add().request_range
            m.limit = op.limit
        else:
            raise InvalidArgument(f"unknown store op {type(op).__name__}")
        if op.prefix:
            m.key, m.range_end = _span(op.key)
        else:
            m.key = op.key


def _responses(ran: Sequence[Op], responses: Any) -> list[list[KeyValue]]:
    """Each op's KeyValues, read by the op's own kind (a Put's answer is never read)."""
    out: list[list[KeyValue]] = []
    for i, op in enumerate(ran):
        if type(op) is Put:
            out.append([])
        elif type(op) is Get:
            out.append([_kv(kv) for kv in responses[i].response_range.kvs])
        else:
            out.append([_kv(kv) for kv in responses[i].response_delete_range.prev_kvs])
    return out


def _event(e: Any) -> WatchEvent:
    kv = _kv(e.kv)
    kind: Literal["put", "delete"] = "delete" if e.type == _DELETE_EVENT else "put"
    return WatchEvent(type=kind, kv=kv, revision=kv.mod_revision)


@final
class EtcdStore:
    """Store over etcd v3.4+.  See ``Store`` for the contract.

    ``endpoints``: "http://host:port" strings (or "host:port"), tried in order;
    "https://host:port" (or bare endpoints with ``tls``) speak TLS.
    ``request_timeout`` bounds each unary call, including the wait for a reconnect.
    ``tls``: the CA, client certificate and server name for TLS endpoints.
    Construction does no I/O; the channel opens on first use, or use
    ``await EtcdStore.connect(...)`` to fail fast when etcd is unreachable.
    """

    def __init__(
        self, endpoints: Sequence[str] | str, *, request_timeout: float = 5.0, tls: EtcdTls | None = None
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not eps:
            raise InvalidArgument("EtcdStore needs at least one endpoint")
        self._endpoints, self._tls = plan_endpoints(eps, tls)
        self._timeout = request_timeout
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch_stub: Any = None
        self._open_lock = asyncio.Lock()
        self._keepalive: KeepAliveStream | None = None
        self._watch_calls: set[Any] = set()
        self._closed = False

    @classmethod
    async def connect(
        cls, endpoints: Sequence[str] | str, *, request_timeout: float = 5.0, tls: EtcdTls | None = None
    ) -> EtcdStore:
        """A store whose etcd answered once; ``Unavailable`` (saying why) otherwise."""
        store = cls(endpoints, request_timeout=request_timeout, tls=tls)
        try:
            await store.revision()
        except BaseException:
            await store.close()
            raise
        return store

    async def _open(self) -> Any:
        if self._closed:
            raise Unavailable("store is closed")
        async with self._open_lock:
            if self._kv is None:
                target = await grpc_target(self._endpoints)
                self._channel = open_channel(target, self._tls, _CHANNEL_OPTIONS)
                self._lease = rpc.LeaseStub(self._channel)
                self._watch_stub = rpc.WatchStub(self._channel)
                self._keepalive = KeepAliveStream(
                    self._lease, lambda lease: rpc.LeaseKeepAliveRequest(ID=lease), self._timeout
                )
                self._kv = rpc.KVStub(self._channel)
        return self._kv

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise await self._explain_timeout(e) from e
            raise translate(e) from e

    async def _explain_timeout(self, e: grpc.aio.AioRpcError) -> TideError:
        """A wait-for-ready deadline hides why the channel is down ("Deadline Exceeded");
        one fail-fast probe, bounded, returns grpc's last connect error instead."""
        channel, kv = self._channel, self._kv
        if self._closed or channel is None or kv is None:
            return translate(e)
        if channel.get_state() is grpc.ChannelConnectivity.READY:
            return translate(e)  # connected: etcd itself was slow
        try:
            probe = rpc.RangeRequest(key=b"\0", count_only=True)
            await kv.Range(probe, timeout=min(1.0, self._timeout), wait_for_ready=False)
        except grpc.aio.AioRpcError as p:
            if p.code() is grpc.StatusCode.UNAVAILABLE:
                return Unavailable(unreachable_message(self._endpoints, self._tls, p.details() or ""))
        return translate(e)

    # -- KV ------------------------------------------------------------------

    async def get(self, key: bytes) -> KeyValue | None:
        kv = self._kv or await self._open()
        resp = await self._call(kv.Range, rpc.RangeRequest(key=key))
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def range(self, prefix: bytes, *, limit: int = 0, start: bytes | None = None) -> RangeResult:
        kv = self._kv or await self._open()
        key, end = _span(prefix)
        if start is not None and start > key:
            key = start
        if prefix and key >= end:  # etcd reads key >= range_end as "key and beyond"
            return RangeResult(kvs=[], revision=await self.revision())
        resp = await self._call(kv.Range, rpc.RangeRequest(key=key, range_end=end, limit=limit))
        return RangeResult(kvs=[_kv(k) for k in resp.kvs], revision=resp.header.revision, more=resp.more)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        kv = self._kv or await self._open()
        resp = await self._call(kv.Put, rpc.PutRequest(key=key, value=value, lease=lease))
        return int(resp.header.revision)

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        kv = self._kv or await self._open()
        key, end = _span(key) if prefix else (key, b"")
        resp = await self._call(kv.DeleteRange, rpc.DeleteRangeRequest(key=key, range_end=end))
        return int(resp.deleted)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        kv = self._kv or await self._open()
        req = _TxnRequest()
        _add_compares(req.compare, compares)
        _add_ops(req.success, success)
        _add_ops(req.failure, failure)
        resp = await self._call(kv.Txn, req)
        succeeded = resp.succeeded
        return TxnResult(
            succeeded=succeeded,
            revision=resp.header.revision,
            responses=_responses(success if succeeded else failure, resp.responses),
        )

    async def revision(self) -> int:
        kv = self._kv or await self._open()
        resp = await self._call(kv.Range, rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``; watches from earlier raise ``Compacted``."""
        kv = self._kv or await self._open()
        await self._call(kv.Compact, rpc.CompactionRequest(revision=revision))

    # -- leases --------------------------------------------------------------

    async def lease_grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise InvalidArgument(f"lease TTL must be positive, got {ttl}")
        if self._lease is None:
            await self._open()
        # etcd TTLs are whole seconds and raised to its minimum (1.5 election timeouts).
        resp = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=math.ceil(ttl)))
        if resp.error:
            raise Internal(f"etcd lease grant: {resp.error}")
        return int(resp.ID)

    async def lease_keepalive(self, lease: int) -> float:
        if self._keepalive is None:
            await self._open()
        assert self._keepalive is not None
        return await self._keepalive.renew(lease)

    async def lease_revoke(self, lease: int) -> None:
        if self._lease is None:
            await self._open()
        with contextlib.suppress(NotFound):  # already expired or revoked: idempotent
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    # -- watch ---------------------------------------------------------------

    def watch(self, prefix: bytes, *, start_revision: int = 0) -> AsyncIterator[list[WatchEvent]]:
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[list[WatchEvent]]:
        cursor = [start_revision]  # next revision owed to the caller; 0 = "now", until created
        delay = _BACKOFF_FIRST
        while not self._closed:
            if self._watch_stub is None:
                await self._open()
            call = self._watch_stub.Watch(wait_for_ready=True)
            self._watch_calls.add(call)
            try:
                async for batch in self._watch_stream(call, prefix, cursor):
                    delay = _BACKOFF_FIRST
                    yield batch
            except grpc.aio.AioRpcError as e:  # the stream broke (etcd restart, network)
                log.warning("watch %r broke (%s); resuming at revision %d", prefix, e.code().name, cursor[0])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._closed or (task is not None and task.cancelling()):
                    raise
            finally:
                self._watch_calls.discard(call)
                call.cancel()
            if self._closed:
                return
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _watch_stream(
        self, call: Any, prefix: bytes, cursor: list[int]
    ) -> AsyncIterator[list[WatchEvent]]:
        key, end = _span(prefix)
        create = rpc.WatchCreateRequest(
            key=key, range_end=end, start_revision=cursor[0], progress_notify=True
        )
        await call.write(rpc.WatchRequest(create_request=create))
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return  # server ended the stream: the caller resumes
            if resp.compact_revision:
                raise Compacted(
                    f"watch from revision {cursor[0]}: etcd compacted history before {resp.compact_revision}",
                    compact_revision=resp.compact_revision,
                )
            if resp.created and cursor[0] == 0:
                cursor[0] = resp.header.revision + 1
            if resp.canceled:
                if resp.created:
                    raise InvalidArgument(f"etcd refused the watch: {resp.cancel_reason}")
                return
            if resp.events:
                batch = [_event(e) for e in resp.events]
                cursor[0] = batch[-1].revision + 1
                yield batch
            elif not resp.created and resp.header.revision >= cursor[0]:
                cursor[0] = resp.header.revision + 1  # progress notify: synced up to here

    async def close(self) -> None:
        """Close the channel; pending watches end, later calls raise ``Unavailable``."""
        self._closed = True
        for call in list(self._watch_calls):
            call.cancel()
        if self._keepalive is not None:
            await self._keepalive.close()
        if self._channel is not None:
            await self._channel.close()
        self._kv = self._lease = self._watch_stub = self._channel = self._keepalive = None
