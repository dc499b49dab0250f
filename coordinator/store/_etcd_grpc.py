"""grpc plumbing for ``EtcdStore`` that needs no etcd types: the channel target,
error translation, and the shared lease keepalive stream.  Imports ``grpc`` but
not ``aetcd`` (message classes are passed in), so ``_etcd`` stays the only
module that knows aetcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc

from coordinator.store._protocol import Compacted, request_too_large
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

__all__ = ["KeepAliveStream", "grpc_target", "translate"]

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


def translate(e: grpc.aio.AioRpcError) -> TideError:
    details = e.details() or ""
    if "request is too large" in details or "larger than max" in details:
        return request_too_large()  # etcd's limit, or grpc's own message size limit
    if e.code() == grpc.StatusCode.OUT_OF_RANGE:
        if "compacted" in details:
            return Compacted(f"etcd: {details}", compact_revision=0)
        return InvalidArgument(f"etcd: {details}")
    return _ERRORS.get(e.code(), Internal)(f"etcd: {e.code().name}: {details}")


async def grpc_target(endpoints: Sequence[tuple[str, int]]) -> str:
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


class KeepAliveStream:
    """One LeaseKeepAlive stream shared by every renewal; replies matched by lease id."""

    def __init__(self, stub: Any, make_request: Callable[[int], Any], timeout: float) -> None:
        self._stub = stub
        self._make_request = make_request
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
                    await call.write(self._make_request(lease))
                ttl = await fut
        except grpc.aio.AioRpcError as e:
            self._fail(call, translate(e))
            raise translate(e) from e
        except TimeoutError as e:
            # A write cancelled half-way leaves the stream in doubt: start a fresh one.
            self._fail(call, Unavailable("etcd lease keepalive timed out"))
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
            self._fail(call, translate(e))

    def _fail(self, call: Any, error: TideError) -> None:
        """Forget a broken stream (the next renewal opens a new one) and fail its waiters."""
        if call is None or self._call is not call:
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
