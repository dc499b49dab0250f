"""The batch API's state changes: create (JSON or JSONL), append, delete a request, set
attributes, finalize, cancel.  A request is accepted only once its shard is in the object
store (the shard is written before the record that names it), so nothing accepted is lost.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from coordinator._batch_schema import BatchRecord
from coordinator.batches._records import BatchRecords
from coordinator.batches._settings import BatchSettings
from coordinator.batches._shards import JsonlSplitter, ShardLine, ShardStore, new_shard_id
from coordinator.store import Store
from tide.api.batches import BatchAttributes, BatchItem, BatchRef
from tide.api.errors import Conflict, FailedPrecondition, InvalidArgument, ResourceExhausted
from tiered_storage import ObjectStore

__all__ = ["BatchService", "new_batch_id"]

_encoder = msgspec.json.Encoder()
_RETRIES = 8


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(8)}"


class BatchService:
    def __init__(
        self,
        store: Store,
        objects: ObjectStore,
        settings: BatchSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.records = BatchRecords(store)
        self.shards = ShardStore(objects)
        self.settings = settings
        self._clock = clock

    async def create(self, ep: str, items: list[BatchItem], attrs: BatchAttributes) -> BatchRef:
        record = await self._new_record(ep, attrs)
        sizes, ids = await self._put_items(ep, record.id, items)
        record = msgspec.structs.replace(record, shards=sizes, shard_ids=ids)
        await self.records.create(record)
        return BatchRef(id=record.id, status=record.status)

    async def create_jsonl(
        self, ep: str, lines: AsyncIterator[bytes], attrs: BatchAttributes, *, finalize: bool
    ) -> BatchRef:
        record = await self._new_record(ep, attrs)
        splitter = JsonlSplitter(self.settings.shard_size, self.settings.request_limit)
        sizes: list[int] = []
        ids: list[str] = []
        async for shard_id, shard in splitter.shards(lines):
            self._check_total(sum(sizes) + len(shard))
            await self.shards.put_requests(ep, record.id, shard_id, shard)
            ids.append(shard_id)
            sizes.append(len(shard))
        record = msgspec.structs.replace(record, shards=sizes, shard_ids=ids)
        if finalize:
            record = msgspec.structs.replace(record, status="FINALIZED", finalized_at=self._clock())
        await self.records.create(record)
        return BatchRef(id=record.id, status=record.status)

    async def append(self, ep: str, batch: str, items: list[BatchItem]) -> BatchRef:
        record, _ = await self.records.read(ep, batch)
        _must_be_draft(record, "append requests to")
        self._check_total(record.request_total + len(items))
        sizes, ids = await self._put_items(ep, batch, items)
        for _ in range(
            _RETRIES
        ):  # the shards are written once (their ids are unique); only the record is retried
            record, rev = await self.records.read(ep, batch)
            _must_be_draft(record, "append requests to")
            grown = msgspec.structs.replace(
                record, shards=[*record.shards, *sizes], shard_ids=[*record.shard_ids, *ids]
            )
            try:
                await self.records.write(rev, grown)
            except Conflict:
                continue
            return BatchRef(id=batch, status=grown.status)
        raise Conflict(f"batch {batch} kept changing while appending; retry")

    async def delete_request(self, ep: str, batch: str, request_id: str) -> BatchRef:
        record, rev = await self.records.read(ep, batch)
        _must_be_draft(record, "delete requests of")
        shard = _shard_of(request_id, record.shard_ids)
        lines = await self.shards.requests(ep, batch, record.shard_ids[shard])
        kept = [line for line in lines if line.id != request_id]
        if len(kept) == len(lines):
            raise InvalidArgument(f"batch {batch} has no request {request_id!r}")
        await self.shards.replace_requests(ep, batch, record.shard_ids[shard], kept)
        sizes = list(record.shards)
        sizes[shard] = len(kept)
        await self.records.write(rev, msgspec.structs.replace(record, shards=sizes))
        return BatchRef(id=batch, status=record.status)

    async def update(self, ep: str, batch: str, attrs: BatchAttributes) -> BatchRef:
        record, rev = await self.records.read(ep, batch)
        if record.status in ("CANCELLED", "FAILED") or record.finished_at:
            raise FailedPrecondition(f"batch {batch} has ended ({record.status}); its attributes are final")
        changed = _with_attrs(record, attrs)
        await self.records.write(rev, changed)
        return BatchRef(id=batch, status=changed.status)

    async def finalize(self, ep: str, batch: str) -> BatchRef:
        record, rev = await self.records.read(ep, batch)
        _must_be_draft(record, "finalize")
        await self.records.write(
            rev, msgspec.structs.replace(record, status="FINALIZED", finalized_at=self._clock())
        )
        return BatchRef(id=batch, status="FINALIZED")

    async def cancel(self, ep: str, batch: str) -> BatchRef:
        """DRAFT: cancelled at once.  FINALIZED: the dispatcher stops handing out requests,
        cancels queued ones (not billed) and lets running ones finish; CANCELLED once drained."""
        record, rev = await self.records.read(ep, batch)
        if record.status == "CANCELLED" or record.cancel_requested:
            raise FailedPrecondition(f"batch {batch} is cancelled already")
        if record.status == "FAILED" or record.finished_at:
            raise FailedPrecondition(f"batch {batch} has finished; there is nothing to cancel")
        if record.status == "DRAFT":
            now = self._clock()
            done = msgspec.structs.replace(
                record,
                status="CANCELLED",
                cancelled=record.request_total,
                finished_at=now,
                cancel_requested=True,
            )
            await self.records.write(rev, done)
            return BatchRef(id=batch, status="CANCELLED")
        await self.records.write(rev, msgspec.structs.replace(record, cancel_requested=True))
        return BatchRef(id=batch, status=record.status)

    # -- helpers ---------------------------------------------------------
    async def _new_record(self, ep: str, attrs: BatchAttributes) -> BatchRecord:
        active = [r for r in await self.records.all_of(ep) if not r.finished_at]
        if len(active) >= self.settings.max_active:
            raise ResourceExhausted(
                f"endpoint {ep} has {len(active)} unfinished batches (the limit, [batch] max-active); "
                "finish or cancel one first"
            )
        record = BatchRecord(id=new_batch_id(), endpoint_id=ep, status="DRAFT", created_at=self._clock())
        return _with_attrs(record, attrs)

    async def _put_items(self, ep: str, batch: str, items: list[BatchItem]) -> tuple[list[int], list[str]]:
        size = self.settings.shard_size
        sizes: list[int] = []
        ids: list[str] = []
        for start in range(0, len(items), size):
            shard_id = new_shard_id()
            chunk = items[start : start + size]
            lines = [self._line(f"req_{shard_id}_{n}", item.input) for n, item in enumerate(chunk)]
            ids.append(shard_id)
            await self.shards.put_requests(ep, batch, shard_id, lines)
            sizes.append(len(lines))
        return sizes, ids

    def _line(self, request_id: str, value: Any) -> ShardLine:
        if len(_encoder.encode(value)) > self.settings.request_limit:
            raise InvalidArgument(
                f"a request's input is over {self.settings.request_limit} bytes ([batch] request-limit); "
                "put large inputs in object storage and pass their URL"
            )
        return ShardLine(id=request_id, input=value)

    def _check_total(self, total: int) -> None:
        if total > self.settings.max_requests:
            raise InvalidArgument(
                f"a batch takes at most {self.settings.max_requests} requests ([batch] max-requests); "
                "split the input into several batches"
            )


def _must_be_draft(record: BatchRecord, what: str) -> None:
    if record.status != "DRAFT":
        raise FailedPrecondition(
            f"cannot {what} batch {record.id}: it is {record.status}; only a DRAFT batch changes its requests"
        )


def _shard_of(request_id: str, shard_ids: list[str]) -> int:
    parts = request_id.split("_")
    if len(parts) != 3 or parts[0] != "req" or parts[1] not in shard_ids:
        raise InvalidArgument(
            f"{request_id!r} is not a request id of this batch (GET .../requests lists them)"
        )
    return shard_ids.index(parts[1])


def _with_attrs(record: BatchRecord, attrs: BatchAttributes) -> BatchRecord:
    changes: dict[str, Any] = {}
    if attrs.name is not None:
        changes["name"] = attrs.name
    if attrs.sla_hours is not None:
        changes["sla_hours"] = attrs.sla_hours
    if attrs.max_price_per_gpu_hour is not None:
        changes["max_price_per_gpu_hour"] = attrs.max_price_per_gpu_hour
    return msgspec.structs.replace(record, **changes)
