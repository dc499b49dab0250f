"""The coordinator's node API as noded sees it (the only way noded talks to
the cluster: it never reaches etcd)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec

from noded._identity import load_token, save_token
from tide.api.errors import NotFound, TideError, Unauthenticated, Unavailable
from tide.api.nodes import DesiredWorkers, Heartbeat, NodeInventory, NodeRegistration

__all__ = ["CoordinatorClient"]

_encode = msgspec.json.Encoder().encode
_desired_decoder = msgspec.json.Decoder(DesiredWorkers)


class CoordinatorClient:
    """Safe for concurrent use by the agent's loops.

    ``url`` may name several replicas: a call that cannot reach one (refused, reset, silent
    past its timeout, or a 502/503/504) goes to the next at once, and the next call starts
    from the replica that last answered.  Every node call is safe to send twice: register
    and heartbeat overwrite, desired only reads."""

    def __init__(
        self, url: str | Sequence[str], join_key: str, *, poll_wait_s: int = 25, token_file: str = ""
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        self._urls = [u.rstrip("/") for u in urls]
        self._at = 0  # the replica that last answered
        self._join_key = join_key
        self._wait = poll_wait_s
        self._session: aiohttp.ClientSession | None = None
        self._token_file = token_file  # the node token, kept across restarts (_identity)
        self.node_id = ""
        self.token = load_token(token_file)

    @property
    def _url(self) -> str:
        return self._urls[self._at]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._wait + 15))
        return self._session

    async def _call(
        self, method: str, path: str, *, key: str, body: Any = None, timeout: float = 5.0
    ) -> bytes:
        """``timeout`` bounds one replica's answer: a silent (partitioned) one is left after it."""
        failure: Unavailable | None = None
        for n in range(len(self._urls)):
            at = (self._at + n) % len(self._urls)
            try:
                raw = await self._call_one(self._urls[at], method, path, key, body, timeout)
            except Unavailable as exc:
                failure = exc
                continue
            self._at = at
            return raw
        assert failure is not None
        raise failure

    async def _call_one(
        self, base: str, method: str, path: str, key: str, body: Any, timeout: float
    ) -> bytes:
        data = _encode(body) if body is not None else None
        headers = {"Authorization": key, "Content-Type": "application/json"}
        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 2.0))
        try:
            async with self._http().request(
                method, base + path, data=data, headers=headers, timeout=limit
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    _raise(resp.status, raw)
                return raw
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"coordinator at {base} unreachable: {exc or type(exc).__name__}") from None

    async def register(self, inventory: NodeInventory, address: str) -> None:
        body = {**msgspec.to_builtins(NodeRegistration(inventory=inventory)), "address": address}
        raw = b""
        if self.token:  # a known host registers again with its own token (a join key may not)
            with contextlib.suppress(Unauthenticated):  # forgotten or re-registered: join anew
                raw = await self._call("POST", "/node/v1/register", key=self.token, body=body)
        if not raw:
            raw = await self._call("POST", "/node/v1/register", key=self._join_key, body=body)
        answer = msgspec.json.decode(raw)
        self.node_id, self.token = answer["nodeId"], answer["token"]
        save_token(self._token_file, self.token)

    async def heartbeat(self, beat: Heartbeat, address: str) -> None:
        body = {**msgspec.to_builtins(beat), "address": address}
        try:
            await self._call("POST", f"/node/v1/nodes/{self.node_id}/heartbeat", key=self.token, body=body)
        except (NotFound, Unauthenticated):  # the coordinator forgot us (memory store restart): re-register
            await self.register(beat.inventory, address)

    async def desired(self, after: int) -> DesiredWorkers:
        path = f"/node/v1/nodes/{self.node_id}/desired?after={after}&wait={self._wait}"
        raw = await self._call("GET", path, key=self.token, timeout=self._wait + 10.0)
        return _desired_decoder.decode(raw)

    async def bundle(self, sha: str) -> bytes:
        """A code bundle's tar (checked against ``sha`` by the caller)."""
        return await self._call(
            "GET", f"/node/v1/nodes/{self.node_id}/bundles/{sha}", key=self.token, timeout=120.0
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)


def _raise(status: int, raw: bytes) -> None:
    try:
        message = str(msgspec.json.decode(raw).get("error", raw[:200]))
    except (msgspec.DecodeError, AttributeError):
        message = raw[:200].decode(errors="replace")
    if status == 404:
        raise NotFound(message)
    if status in (401, 403):
        raise Unauthenticated(message)
    if status >= 500:
        raise Unavailable(f"coordinator error {status}: {message}")
    raise TideError(f"coordinator said {status}: {message}")
