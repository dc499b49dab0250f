"""A batch's requests and results as shards (JSONL objects) in the object store.

``batches/<ep>/<batch>/requests/<shard id>``: one request a line, ``{"id", "input"}``, or
``{"id", "error"}`` for a JSONL line that could not be read (it fails alone, with its line
number).  ``batches/<ep>/<batch>/results/<shard index>``: one result a line, in the wire
shape of a result (``BatchRequestResult``), written once when the shard is folded.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from tiered_storage import ObjectStore, object_key

__all__ = ["JsonlSplitter", "ShardLine", "ShardStore", "new_shard_id"]

_encoder = msgspec.json.Encoder()


class ShardLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    input: Any = None
    error: str = ""  # the line could not be read: the request fails with this


_line_decoder = msgspec.json.Decoder(ShardLine)


def new_shard_id() -> str:
    return secrets.token_hex(4)


class ShardStore:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def requests_key(ep: str, batch: str, shard_id: str) -> str:
        return object_key("batches", ep, batch, "requests", shard_id)

    @staticmethod
    def results_key(ep: str, batch: str, shard: int) -> str:
        return object_key("batches", ep, batch, "results", f"{shard:06d}")

    async def put_requests(self, ep: str, batch: str, shard_id: str, lines: list[ShardLine]) -> None:
        await self.objects.put(self.requests_key(ep, batch, shard_id), _jsonl(lines), if_absent=True)

    async def replace_requests(self, ep: str, batch: str, shard_id: str, lines: list[ShardLine]) -> None:
        await self.objects.put(self.requests_key(ep, batch, shard_id), _jsonl(lines))

    async def requests(self, ep: str, batch: str, shard_id: str) -> list[ShardLine]:
        raw = await self.objects.get(self.requests_key(ep, batch, shard_id))
        return [_line_decoder.decode(line) for line in raw.splitlines() if line]

    async def put_results(self, ep: str, batch: str, shard: int, results: list[dict[str, Any]]) -> None:
        await self.objects.put(self.results_key(ep, batch, shard), _jsonl(results))

    async def results(self, ep: str, batch: str, shard: int) -> list[dict[str, Any]]:
        raw = await self.objects.get(self.results_key(ep, batch, shard))
        return [msgspec.json.decode(line) for line in raw.splitlines() if line]

    async def results_raw(self, ep: str, batch: str, shard: int) -> bytes:
        return await self.objects.get(self.results_key(ep, batch, shard))

    async def delete_batch(self, ep: str, batch: str) -> None:
        async for meta in self.objects.list(object_key("batches", ep, batch)):
            await self.objects.delete(meta.key)


def _jsonl(items: list[Any]) -> bytes:
    return b"".join(_encoder.encode(item) + b"\n" for item in items)


class JsonlSplitter:
    """Cuts a JSONL stream into shards of ``shard_size`` requests; a line that is not a JSON
    object with an ``input`` becomes a failed request that names its line number."""

    def __init__(self, shard_size: int, max_line: int) -> None:
        self._shard_size = shard_size
        self._max_line = max_line
        self.line_no = 0

    async def shards(self, lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, list[ShardLine]]]:
        """(shard id, its requests); request ids are ``req_<shard id>_<n>``."""
        shard: list[ShardLine] = []
        shard_id = new_shard_id()
        async for raw in lines:
            self.line_no += 1
            if not raw.strip():
                continue
            shard.append(self.parse(raw, f"req_{shard_id}_{len(shard)}"))
            if len(shard) == self._shard_size:
                yield shard_id, shard
                shard, shard_id = [], new_shard_id()
        if shard:
            yield shard_id, shard

    def parse(self, raw: bytes, request_id: str) -> ShardLine:
        if len(raw) > self._max_line:
            return ShardLine(
                id=request_id, error=f"line {self.line_no}: {len(raw)} bytes, over {self._max_line}"
            )
        try:
            item = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return ShardLine(id=request_id, error=f"line {self.line_no}: not JSON ({exc})")
        if not isinstance(item, dict) or "input" not in item:
            return ShardLine(id=request_id, error=f"line {self.line_no}: a JSON object with an 'input' key")
        return ShardLine(id=request_id, input=item["input"])
