"""Job payloads and results above the inline limit, in the cluster's object store.

Keys name their owner: ``jobs/<endpoint>/<job>/input`` and ``.../output``, so
the leader's orphan sweep (coordinator/control/_blob_sweep.py) can tell whose
an object is and delete it once that job's record is gone (its TTL or result
retention ended; etcd drops the record by lease, so no code runs then).  A
key of 64 hex digits is a blob from before (content-addressed under the state
dir, ``<k[:2]>/<k>``); it is read from the same store, and never swept.
"""

from __future__ import annotations

from tiered_storage import ObjectStore, object_key

__all__ = ["JobBlobs"]


class JobBlobs:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    async def put(self, ep: str, job_id: str, part: str, data: bytes) -> str:
        """Store one part (``input``, ``output``) of a job; returns its key.  Unavailable
        (a 503) when the store is down: the caller has not accepted anything yet."""
        key = object_key("jobs", ep, job_id, part)
        await self.objects.put(key, data)
        return key

    async def get(self, key: str) -> bytes:
        if len(key) == 64 and "/" not in key:  # a content-addressed blob of an older release
            key = f"{key[:2]}/{key}"
        return await self.objects.get(key)
