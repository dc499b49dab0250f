"""The coordinator's node API as noded sees it (the only way noded talks to
the cluster: it never reaches etcd)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec

from tide.api.errors import NotFound, TideError, Unauthenticated, Unavailable
from tide.api.nodes import DesiredWorkers, Heartbeat, NodeInventory, NodeRegistration

__all__ = ["CoordinatorClient"]

_encode = msgspec.json.Encoder().encode
_desired_decoder = msgspec.json.Decoder(DesiredWorkers)


class CoordinatorClient:
    """Safe for concurrent use by the agent's loops."""

    def __init__(self, url: str, join_key: str, *, poll_wait_s: int = 25) -> None:
        self._url = url.rstrip("/")
        self._join_key = join_key
        self._wait = poll_wait_s
        self._session: aiohttp.ClientSession | None = None
        self.node_id = ""
        self.token = ""

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._wait + 15))
        return self._session

    async def _call(self, method: str, path: str, *, key: str, body: Any = None) -> bytes:
        data = _encode(body) if body is not None else None
        headers = {"Authorization": key, "Content-Type": "application/json"}
        try:
            async with self._http().request(method, self._url + path, data=data, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    _raise(resp.status, raw)
                return raw
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"coordinator at {self._url} unreachable: {exc}") from None

    async def register(self, inventory: NodeInventory, address: str) -> None:
        body = {**msgspec.to_builtins(NodeRegistration(inventory=inventory)), "address": address}
        raw = await self._call("POST", "/node/v1/register", key=self._join_key, body=body)
        answer = msgspec.json.decode(raw)
        self.node_id, self.token = answer["nodeId"], answer["token"]

    async def heartbeat(self, beat: Heartbeat, address: str) -> None:
        body = {**msgspec.to_builtins(beat), "address": address}
        try:
            await self._call("POST", f"/node/v1/nodes/{self.node_id}/heartbeat", key=self.token, body=body)
        except (NotFound, Unauthenticated):  # the coordinator forgot us (memory store restart): re-register
            await self.register(beat.inventory, address)

    async def desired(self, after: int) -> DesiredWorkers:
        path = f"/node/v1/nodes/{self.node_id}/desired?after={after}&wait={self._wait}"
        return _desired_decoder.decode(await self._call("GET", path, key=self.token))

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
