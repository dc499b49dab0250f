"""Reading and writing batch records (one etcd key each; compare-and-swap on mod revision)."""

from __future__ import annotations

import msgspec

from coordinator._batch_schema import BatchRecord, batch_keys
from coordinator._schema import encode
from coordinator.store import Compare, Op, Put, Store
from tide.api.errors import Conflict, NotFound

__all__ = ["BatchRecords"]

_decoder = msgspec.json.Decoder(BatchRecord)


class BatchRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def read(self, ep: str, batch: str) -> tuple[BatchRecord, int]:
        kv = await self.store.get(batch_keys.batch(ep, batch))
        if kv is None:
            raise NotFound(f"batch {batch!r} not found on endpoint {ep!r} (GET /v2/{ep}/batch lists them)")
        return _decoder.decode(kv.value), kv.mod_revision

    async def all_of(self, ep: str) -> list[BatchRecord]:
        res = await self.store.range(batch_keys.batch(ep))
        return [_decoder.decode(kv.value) for kv in res.kvs]

    async def every(self) -> list[tuple[BatchRecord, int]]:
        res = await self.store.range(batch_keys.BATCHES)
        return [(_decoder.decode(kv.value), kv.mod_revision) for kv in res.kvs]

    async def create(self, record: BatchRecord) -> None:
        key = batch_keys.batch(record.endpoint_id, record.id)
        res = await self.store.txn([Compare(key=key, target="version", op="==", value=0)], [_put(record)])
        if not res.succeeded:
            raise Conflict(f"batch {record.id} exists already")

    async def write(self, rev: int, record: BatchRecord, extra: list[Op] | None = None) -> int:
        key = batch_keys.batch(record.endpoint_id, record.id)
        res = await self.store.txn(
            [Compare(key=key, target="mod", op="==", value=rev)], [_put(record), *(extra or [])]
        )
        if not res.succeeded:
            raise Conflict(f"batch {record.id} changed concurrently; retry")
        return res.revision


def _put(record: BatchRecord) -> Put:
    return Put(key=batch_keys.batch(record.endpoint_id, record.id), value=encode(record))
