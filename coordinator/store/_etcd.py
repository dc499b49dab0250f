"""``EtcdStore``: the Store over etcd v3, the only module that imports ``aetcd``.

aetcd's high-level client lacks what the contract needs (range limits, lease
compares, a long-lived keepalive stream, resumable watches), so this adapter
speaks etcd's gRPC API through aetcd's generated stubs on ONE ``grpc.aio``
channel, shared by every call (no per-call connect).  grpc reconnects the
channel by itself; unary calls use ``wait_for_ready`` with a deadline, so a
call made while etcd restarts waits for it instead of failing at once.

Watches are one gRPC stream each.  Each remembers the next revision it owes
its caller and, when the stream breaks (etcd restart: "Stream removed"),
reopens it from there with jittered backoff; ``Compacted`` surfaces only when
that revision is gone.  Keepalives share one ``LeaseKeepAlive`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import random
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, final
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from coordinator.store._protocol import (
    Compacted,
    Compare,
    Delete,
    KeyValue,
    Op,
    Put,
    RangeResult,
    TxnResult,
    WatchEvent,
    prefix_end,
)
from tide.api.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TideError,
    Unauthenticated,
    Unavailable,
)

__all__ = ["EtcdStore"]

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
_ERRORS: Final[dict[grpc.StatusCode, type[TideError]]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 2.0


def _translate(e: grpc.aio.AioRpcError) -> TideError:
    details = e.details() or ""
    if e.code() == grpc.StatusCode.OUT_OF_RANGE:
        if "compacted" in details:
            return Compacted(f"etcd: {details}", compact_revision=0)
        return InvalidArgument(f"etcd: {details}")
    return _ERRORS.get(e.code(), Internal)(f"etcd: {e.code().name}: {details}")


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


def _compare(c: Compare) -> Any:
    target, field = _TARGETS[c.target]
    if isinstance(c.value, bytes) != (c.target == "value"):
        raise InvalidArgument(f"compare on {c.target} got a {type(c.value).__name__} value")
    return rpc.Compare(key=c.key, target=target, result=_RESULTS[c.op], **{field: c.value})


def _request_op(op: Op) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease))
    key, end = _span(op.key) if op.prefix else (op.key, b"")
    if isinstance(op, Delete):
        req = rpc.DeleteRangeRequest(key=key, range_end=end, prev_kv=True)
        return rpc.RequestOp(request_delete_range=req)
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, range_end=end, limit=op.limit))


def _response(r: Any) -> list[KeyValue]:
    which = r.WhichOneof("response")
    if which == "response_range":
        return [_kv(kv) for kv in r.response_range.kvs]
    if which == "response_delete_range":
        return [_kv(kv) for kv in r.response_delete_range.prev_kvs]
    return []


def _event(e: Any) -> WatchEvent:
    if e.type == rpc.Event.DELETE:
        return WatchEvent(type="delete", kv=_kv(e.kv), revision=e.kv.mod_revision)
    return WatchEvent(type="put", kv=_kv(e.kv), revision=e.kv.mod_revision)


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme not in ("http", "etcd"):
        raise InvalidArgument(f"unsupported etcd endpoint {endpoint!r} (TLS is not supported yet)")
    if not parts.hostname:
        raise InvalidArgument(f"etcd endpoint {endpoint!r} has no host")
    return parts.hostname, parts.port or 2379


async def _grpc_target(endpoints: Sequence[tuple[str, int]]) -> str:
    """One target for every endpoint, so grpc's pick_first tries each in turn."""
    if len(endpoints) == 1:
        host, port = endpoints[0]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    loop = asyncio.get_running_loop()
    v4: list[str] = []
    v6: list[str] = []
    for host, port in endpoints:
        try:
            addrs = [ipaddress.ip_address(host)]
        except ValueError:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addrs = [ipaddress.ip_address(i[4][0]) for i in infos]
        for a in addrs:
            (v4 if a.version == 4 else v6).append(f"{a}:{port}" if a.version == 4 else f"[{a}]:{port}")
    if not v4 and not v6:
        raise Unavailable(f"no address for etcd endpoints {endpoints}")
    return "ipv4:" + ",".join(dict.fromkeys(v4)) if v4 else "ipv6:" + ",".join(dict.fromkeys(v6))


@final
class EtcdStore:
    """Store over etcd v3.4+.  See ``Store`` for the contract.

    ``endpoints``: "http://host:port" strings (or "host:port"), tried in order.
    ``request_timeout`` bounds each unary call, including the wait for a reconnect.
    Construction does no I/O; the channel opens on first use, or use
    ``await EtcdStore.connect(...)`` to fail fast when etcd is unreachable.
    """

    def __init__(self, endpoints: Sequence[str] | str, *, request_timeout: float = 5.0) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not eps:
            raise InvalidArgument("EtcdStore needs at least one endpoint")
        self._endpoints = [_host_port(e) for e in eps]
        self._timeout = request_timeout
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch_stub: Any = None
        self._open_lock = asyncio.Lock()
        self._keepalive: _KeepAliveStream | None = None
        self._watch_calls: set[Any] = set()
        self._closed = False

    @classmethod
    async def connect(cls, endpoints: Sequence[str] | str, *, request_timeout: float = 5.0) -> EtcdStore:
        """A store whose etcd answered once; ``Unavailable`` otherwise."""
        store = cls(endpoints, request_timeout=request_timeout)
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
                target = await _grpc_target(self._endpoints)
                self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
                self._lease = rpc.LeaseStub(self._channel)
                self._watch_stub = rpc.WatchStub(self._channel)
                self._keepalive = _KeepAliveStream(self._lease, self._timeout)
                self._kv = rpc.KVStub(self._channel)
        return self._kv

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            raise _translate(e) from e

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
        req = rpc.TxnRequest(
            compare=[_compare(c) for c in compares],
            success=[_request_op(op) for op in success],
            failure=[_request_op(op) for op in failure],
        )
        resp = await self._call(kv.Txn, req)
        return TxnResult(
            succeeded=resp.succeeded,
            revision=resp.header.revision,
            responses=[_response(r) for r in resp.responses],
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
            except grpc.aio.AioRpcError:
                pass  # the stream broke (etcd restart, network): resume below
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


class _KeepAliveStream:
    """One LeaseKeepAlive stream shared by every renewal; replies matched by lease id."""

    def __init__(self, stub: Any, timeout: float) -> None:
        self._stub = stub
        self._timeout = timeout
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[int, deque[asyncio.Future[float]]] = {}
        self._write_lock = asyncio.Lock()

    async def renew(self, lease: int) -> float:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease, deque()).append(fut)
        call: Any = None
        try:
            async with asyncio.timeout(self._timeout):
                async with self._write_lock:
                    call = self._ensure_call()
                    await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                ttl = await fut
        except grpc.aio.AioRpcError as e:
            self._fail(call, _translate(e))
            raise _translate(e) from e
        except TimeoutError as e:
            raise Unavailable(f"etcd lease keepalive for {lease:x} timed out") from e
        finally:
            q = self._waiters.get(lease)
            if q is not None and fut in q:
                q.remove(fut)
        if ttl <= 0:
            raise NotFound(f"lease {lease:x} not found or expired")
        return ttl

    def _ensure_call(self) -> Any:
        if self._call is None:
            self._call = self._stub.LeaseKeepAlive(wait_for_ready=True)
            self._reader = asyncio.create_task(self._read(self._call), name="etcd-lease-keepalive")
        return self._call

    async def _read(self, call: Any) -> None:
        try:
            while (resp := await call.read()) is not grpc.aio.EOF:
                q = self._waiters.get(resp.ID)
                if q:
                    fut = q.popleft()
                    if not fut.done():
                        fut.set_result(float(resp.TTL))
            self._fail(call, Unavailable("etcd closed the lease keepalive stream"))
        except grpc.aio.AioRpcError as e:
            self._fail(call, _translate(e))

    def _fail(self, call: Any, error: TideError) -> None:
        """Forget a broken stream (the next renewal opens a new one) and fail its waiters."""
        if self._call is not call:
            return
        self._call = None
        call.cancel()
        waiters, self._waiters = self._waiters, {}
        for q in waiters.values():
            for fut in q:
                if not fut.done():
                    fut.set_exception(error)

    async def close(self) -> None:
        if self._call is not None:
            self._fail(self._call, Unavailable("store is closed"))
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
