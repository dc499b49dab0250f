"""The admin API (/admin/v1): endpoints, API keys, worker tokens, queue view.

Endpoint fields use RunPod REST v1 names (tide/api/endpoints.py).  An
endpoint's id is its name, so ``/v2/<name>/run`` works without a lookup.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from coordinator._schema import decode_job, encode, keys
from coordinator.api._auth import Auth, hash_key
from coordinator.api._endpoint_writes import EndpointWrites
from coordinator.api._http import decode_body, json_response, query_int
from coordinator.jobs import ColdStartTracker, JobService, cold_start_json
from coordinator.store import Store
from coordinator.view import ClusterView
from tide.api.endpoints import ApiKey, ApiKeyCreate, Endpoint, EndpointSpec, EndpointUpdate
from tide.api.errors import NotFound

__all__ = ["AdminRoutes", "endpoint_json"]

_HAND_TOKEN_TTL_S = 7 * 86400  # a hand-started worker's token, unless ?ttl_s= says otherwise


def endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"id": endpoint.id, **msgspec.to_builtins(endpoint.spec)}
    out["createdAt"] = endpoint.created_at
    out["version"] = endpoint.version
    return out


class AdminRoutes:
    def __init__(
        self, *, store: Store, view: ClusterView, cold_starts: ColdStartTracker, auth: Auth, jobs: JobService
    ) -> None:
        self._store = store
        self._view = view
        self._cold_starts = cold_starts
        self._auth = auth
        self._jobs = jobs
        self._writes = EndpointWrites(store=store, view=view, jobs=jobs)

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/admin/v1/endpoints", self.create_endpoint)
        r.add_get("/admin/v1/endpoints", self.list_endpoints)
        r.add_get("/admin/v1/endpoints/{ep}", self.get_endpoint)
        r.add_patch("/admin/v1/endpoints/{ep}", self.update_endpoint)
        r.add_post("/admin/v1/endpoints/{ep}/update", self.update_endpoint)
        r.add_delete("/admin/v1/endpoints/{ep}", self.delete_endpoint)
        r.add_post("/admin/v1/endpoints/{ep}/workers/{worker}/token", self.worker_token)
        r.add_get("/admin/v1/endpoints/{ep}/jobs", self.list_jobs)
        r.add_post("/admin/v1/keys", self.create_key)
        r.add_get("/admin/v1/keys", self.list_keys)
        r.add_delete("/admin/v1/keys/{key}", self.revoke_key)

    def _note_put(self, key: bytes, value: bytes, revision: int) -> None:
        self._writes.note_put(key, value, revision)

    # -- endpoints -------------------------------------------------------
    async def create_endpoint(self, request: web.Request) -> web.Response:
        spec = decode_body(await request.read(), EndpointSpec, what="endpoint")
        return json_response(endpoint_json(await self._writes.create(spec)), 201)

    async def list_endpoints(self, request: web.Request) -> web.Response:
        eps = sorted(self._view.endpoints.values(), key=lambda e: e[0].id)
        return json_response([self._describe(e) for e, _ in eps])

    def _describe(self, endpoint: Endpoint) -> dict[str, Any]:
        out = endpoint_json(endpoint)
        out["health"] = self._jobs.health(endpoint.id)
        out["placement"] = self._view.reasons.get(endpoint.id, "")  # why its workers wait, if they do
        last = self._cold_starts.last(endpoint.id)
        out["lastColdStart"] = cold_start_json(last) if last is not None else None
        return out

    async def get_endpoint(self, request: web.Request) -> web.Response:
        endpoint, _ = self._get(request.match_info["ep"])
        return json_response(self._describe(endpoint))

    def _get(self, ep: str) -> tuple[Endpoint, int]:
        found = self._view.endpoints.get(ep)
        if found is None:
            raise NotFound(f"endpoint {ep!r} not found; 'tide endpoint list' shows the endpoints")
        return found

    async def update_endpoint(self, request: web.Request) -> web.Response:
        update = decode_body(await request.read(), EndpointUpdate, what="endpoint update")
        changes = {
            f: v for f in EndpointUpdate.__struct_fields__ if (v := getattr(update, f)) is not msgspec.UNSET
        }
        return json_response(endpoint_json(await self._writes.update(request.match_info["ep"], changes)))

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        ep = request.match_info["ep"]
        await self._writes.delete(ep)
        return json_response({"id": ep, "deleted": True})

    async def worker_token(self, request: web.Request) -> web.Response:
        """A token for a worker started by hand (noded mints its own workers')."""
        ep, worker = request.match_info["ep"], request.match_info["worker"]
        ttl_s = query_int(request, "ttl_s", _HAND_TOKEN_TTL_S, 60, 30 * 86400)
        token, expires = self._auth.hand_token(ep, worker, ttl_s)
        return json_response({"endpointId": ep, "workerId": worker, "token": token, "expiresAt": expires})

    async def list_jobs(self, request: web.Request) -> web.Response:
        """The queue view: queued and running jobs, oldest first."""
        ep = request.match_info["ep"]
        self._get(ep)
        limit = query_int(request, "limit", 100, 1, 10_000)
        res = await self._store.range(keys.jobs_of(ep), limit=0)
        rows = [decode_job(kv.value) for kv in res.kvs]
        active = sorted((r for r in rows if r.status in ("IN_QUEUE", "IN_PROGRESS")), key=lambda r: r.seq)
        recent = sorted((r for r in rows if r not in active), key=lambda r: -r.finished_at)
        out = [
            {
                "id": r.id,
                "status": r.status,
                "createdAt": r.created_at,
                "workerId": r.worker_id,
                "retries": r.retries,
            }
            for r in [*active, *recent][:limit]
        ]
        return json_response({"endpointId": ep, "health": self._jobs.health(ep), "jobs": out})

    # -- keys ------------------------------------------------------------
    async def create_key(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read(), ApiKeyCreate, what="API key request")
        secret = "tk_" + secrets.token_urlsafe(32)
        key = ApiKey(
            id=uuid.uuid4().hex[:12],
            name=req.name,
            scope=req.scope,
            endpoint_ids=req.endpoint_ids,
            sha256=hash_key(secret),
            created_at=time.time(),
        )
        revision = await self._store.put(keys.apikey(key.sha256), encode(key))
        self._note_put(keys.apikey(key.sha256), encode(key), revision)
        return json_response({**_key_json(key), "key": secret}, 201)

    async def list_keys(self, request: web.Request) -> web.Response:
        res = await self._store.range(keys.APIKEYS)
        found = [msgspec.json.decode(kv.value, type=ApiKey) for kv in res.kvs]
        return json_response([_key_json(k) for k in sorted(found, key=lambda k: k.created_at)])

    async def revoke_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["key"]
        res = await self._store.range(keys.APIKEYS)
        for kv in res.kvs:
            key = msgspec.json.decode(kv.value, type=ApiKey)
            if key.id == key_id or key.name == key_id:
                revoked = msgspec.structs.replace(key, revoked=True)
                revision = await self._store.put(kv.key, encode(revoked))
                self._note_put(kv.key, encode(revoked), revision)
                return json_response(_key_json(revoked))
        raise NotFound(f"API key {key_id!r} not found; 'tide keys list' shows the keys")


def _key_json(key: ApiKey) -> dict[str, Any]:
    out = msgspec.to_builtins(key)
    out.pop("sha256", None)
    return out  # type: ignore[no-any-return]
