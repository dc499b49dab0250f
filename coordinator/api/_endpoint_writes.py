"""Creating, changing and deleting endpoints in the store: one implementation for every API
that does it (the admin API, RunPod's GraphQL management API)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from coordinator._node_schema import nkeys
from coordinator._schema import encode, keys
from coordinator.jobs import JobService
from coordinator.store import Compare, KeyValue, Put, Store
from coordinator.view import ClusterView
from tide.api.endpoints import Endpoint, EndpointSpec
from tide.api.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from tiered_storage import parse_model_ref

__all__ = ["EndpointWrites", "check_spec"]

# A change to any of these is a new version: workers restart on it.
_RUNTIME_FIELDS = (
    "image", "command", "args", "env", "gpu_type_ids", "gpu_count", "cpus", "memory_mb", "model",
)  # fmt: skip


def check_spec(spec: EndpointSpec) -> None:
    if spec.model:
        parse_model_ref(spec.model)  # InvalidArgument: a 400 that shows the forms
    if spec.workers_min > spec.workers_max:
        raise InvalidArgument(
            f"workersMin ({spec.workers_min}) must not exceed workersMax ({spec.workers_max})"
        )


class EndpointWrites:
    def __init__(self, *, store: Store, view: ClusterView, jobs: JobService) -> None:
        self._store = store
        self._view = view
        self._jobs = jobs

    def note_put(self, key: bytes, value: bytes, revision: int) -> None:
        # Read your writes: a client that just created an endpoint or a key
        # uses it next; do not make it wait for the watch to bring it back.
        kv = KeyValue(key=key, value=value, create_revision=revision, mod_revision=revision, version=1)
        self._view.note_local_put(kv)

    async def create(self, spec: EndpointSpec) -> Endpoint:
        check_spec(spec)
        endpoint = Endpoint(id=spec.name, spec=spec, created_at=time.time())
        key = keys.endpoint(endpoint.id)
        res = await self._store.txn(
            [Compare(key=key, target="create", op="==", value=0)], [Put(key=key, value=encode(endpoint))]
        )
        if not res.succeeded:
            raise AlreadyExists(
                f"endpoint {spec.name!r} already exists; update it with 'tide endpoint update'"
            )
        self.note_put(key, encode(endpoint), res.revision)
        return endpoint

    async def update(self, ep: str, changes: dict[str, Any]) -> Endpoint:
        """``changes``: EndpointSpec field name -> new value; constraints are checked again."""
        kv = await self._store.get(keys.endpoint(ep))
        if kv is None:
            raise NotFound(f"endpoint {ep!r} not found")
        current = msgspec.json.decode(kv.value, type=Endpoint)
        spec = msgspec.structs.replace(current.spec, **changes)
        spec = msgspec.convert(msgspec.to_builtins(spec), EndpointSpec)  # re-validate constraints
        check_spec(spec)
        bump = any(f in changes for f in _RUNTIME_FIELDS)
        updated = msgspec.structs.replace(current, spec=spec, version=current.version + (1 if bump else 0))
        res = await self._store.txn(
            [Compare(key=kv.key, target="mod", op="==", value=kv.mod_revision)],
            [Put(key=kv.key, value=encode(updated))],
        )
        if not res.succeeded:
            raise Conflict(f"endpoint {ep!r} changed concurrently; retry")
        self.note_put(kv.key, encode(updated), res.revision)
        return updated

    async def delete(self, ep: str) -> None:
        if await self._store.delete(keys.endpoint(ep)) == 0:
            raise NotFound(f"endpoint {ep!r} not found")
        await self._jobs.purge_queue(ep)
        await self._store.delete(nkeys.coldstarts(ep))
