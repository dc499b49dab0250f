"""Batches: run-batch on spare capacity (RunPod's batch jobs API plus JSONL, SLA and cost).

A batch is a record in etcd plus shards of requests and results in the object store; the
leader's dispatcher feeds open shards to the job queue as low-priority jobs (see
``_dispatcher``)."""

from coordinator.batches._dispatcher import BatchDispatcher, BatchJobFeed
from coordinator.batches._reads import BatchReads
from coordinator.batches._service import BatchService
from coordinator.batches._settings import BatchSettings
from coordinator.batches._shards import JsonlSplitter, ShardStore

__all__ = [
    "BatchDispatcher",
    "BatchJobFeed",
    "BatchReads",
    "BatchService",
    "BatchSettings",
    "JsonlSplitter",
    "ShardStore",
]
