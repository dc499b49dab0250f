"""The batch API's reads: the summary (RunPod's fields, plus ``sla`` and ``cost``), a page
of per-request results, and every result as one JSONL stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from coordinator._batch_schema import BatchRecord, ShardLease, batch_keys
from coordinator.batches._children import child_result, price_of, read_children, request_state
from coordinator.batches._records import BatchRecords
from coordinator.batches._settings import BatchSettings
from coordinator.batches._shards import ShardStore
from coordinator.jobs import JobsContext
from tide.api.batches import BatchCost, BatchSla, BatchSummary

__all__ = ["BatchReads"]

_encoder = msgspec.json.Encoder()
_lease_decoder = msgspec.json.Decoder(ShardLease)


class BatchReads:
    def __init__(self, ctx: JobsContext, shards: ShardStore, settings: BatchSettings) -> None:
        self._ctx = ctx
        self._records = BatchRecords(ctx.store)
        self._shards = shards
        self._settings = settings

    async def summary(self, ep: str, batch: str) -> BatchSummary:
        record, _ = await self._records.read(ep, batch)
        return await self._summary(record)

    async def all_of(self, ep: str) -> list[BatchSummary]:
        records = sorted(await self._records.all_of(ep), key=lambda r: r.created_at, reverse=True)
        return [await self._summary(r) for r in records]

    async def _summary(self, record: BatchRecord) -> BatchSummary:
        counts = {"COMPLETED": 0, "FAILED": 0, "CANCELLED": 0, "IN_PROGRESS": 0}
        if not record.finished_at and record.status == "FINALIZED":
            for lease in await self._leases(record.id):
                for child, _ in (
                    await read_children(self._ctx, record.endpoint_id, record.id, lease.shard)
                ).values():
                    state = request_state(child)
                    counts[state] = counts.get(state, 0) + 1
        return BatchSummary(
            id=record.id,
            endpoint_id=record.endpoint_id,
            status=record.status,
            name=record.name,
            request_total=record.request_total,
            request_in_progress=counts["IN_PROGRESS"],
            request_completed=record.completed + counts["COMPLETED"],
            request_failed=record.failed + counts["FAILED"],
            request_cancelled=record.cancelled + counts["CANCELLED"],
            created_at=_ms(record.created_at),
            finalized_at=_ms(record.finalized_at),
            finished_at=_ms(record.finished_at),
            sla=self._sla(record),
            cost=self._cost(record),
        )

    def _sla(self, record: BatchRecord) -> BatchSla | None:
        if not record.sla_hours:
            return None
        deadline = _ms(record.finalized_at + record.sla_hours * 3600) if record.finalized_at else 0
        return BatchSla(
            hours=record.sla_hours,
            deadline_at=deadline,
            at_risk=bool(record.at_risk),
            note=record.at_risk,
            workers=record.workers,
        )

    def _cost(self, record: BatchRecord) -> BatchCost:
        prices = {key: price_of(self._settings.prices, key) for key in record.gpu_seconds}
        usd = sum(seconds / 3600 * prices[key] for key, seconds in record.gpu_seconds.items())
        return BatchCost(
            gpu_seconds=dict(record.gpu_seconds),
            price_per_gpu_hour=prices,
            usd=round(usd, 6),
            requests_run=record.runs,
        )

    async def _leases(self, batch: str) -> list[ShardLease]:
        res = await self._ctx.store.range(batch_keys.lease(batch))
        return [_lease_decoder.decode(kv.value) for kv in res.kvs]

    # -- results ---------------------------------------------------------
    async def page(self, ep: str, batch: str, offset: int, limit: int) -> dict[str, Any]:
        record, _ = await self._records.read(ep, batch)
        out: list[dict[str, Any]] = []
        start = 0
        for shard, size in enumerate(record.shards):
            if start + size > offset and len(out) < limit:
                rows = await self._shard_rows(record, shard)
                skip = max(0, offset - start)
                out.extend(rows[skip : skip + limit - len(out)])
            start += size
        total = record.request_total
        return {
            "requests": out,
            "total": total,
            "offset": offset,
            "limit": limit,
            "hasMore": offset + len(out) < total,
        }

    async def stream(self, ep: str, batch: str) -> AsyncIterator[bytes]:
        """Every request's result as JSONL, shard by shard (folded shards straight from their file)."""
        record, _ = await self._records.read(ep, batch)
        open_shards = await self._open_shards(record)
        for shard, size in enumerate(record.shards):
            if size and self._folded(record, shard, open_shards):
                yield await self._shards.results_raw(ep, batch, shard)
            elif size:
                yield b"".join(_encoder.encode(row) + b"\n" for row in await self._shard_rows(record, shard))

    async def _open_shards(self, record: BatchRecord) -> set[int]:
        return {lease.shard for lease in await self._leases(record.id)}

    @staticmethod
    def _folded(record: BatchRecord, shard: int, open_shards: set[int]) -> bool:
        return shard < record.next_shard and shard not in open_shards

    async def _shard_rows(self, record: BatchRecord, shard: int) -> list[dict[str, Any]]:
        ep = record.endpoint_id
        if not record.shards[shard]:
            return []
        if self._folded(record, shard, await self._open_shards(record)):
            return await self._shards.results(ep, record.id, shard)
        lines = await self._shards.requests(ep, record.id, record.shard_ids[shard])
        children = await read_children(self._ctx, ep, record.id, shard) if shard < record.next_shard else {}
        waiting = "CANCELLED" if record.status == "CANCELLED" else "IN_QUEUE"
        rows = []
        for i, line in enumerate(lines):
            if line.error:
                rows.append({"id": line.id, "status": "FAILED", "error": line.error})
            elif i in children:
                rows.append(await child_result(self._ctx, line.id, children[i][0]))
            else:
                rows.append({"id": line.id, "status": waiting})
        return rows


def _ms(ts: float) -> int:
    return int(ts * 1000)
