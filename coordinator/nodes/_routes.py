"""The node API (/node/v1, called by tide-noded) and the admin routes about
nodes, workers, logs and usage.

noded never talks to etcd: it registers with a join key (an admin- or
node-scoped API key), then uses its own credential (an HMAC of its node id)
to heartbeat and to long-poll its desired workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from coordinator._node_schema import NodeRecord, UsageRecord, nkeys
from coordinator.api._app_keys import APP_KEY_PRICES
from coordinator.api._http import Auth, decode_body, json_response, mint_worker_token, query_int
from coordinator.jobs import ColdStartTracker, cold_start_json
from coordinator.nodes._desired import desired_for
from coordinator.nodes._mig_routes import MigRoutes
from coordinator.scheduling import DEFAULT_AHEAD, AheadSettings, slice_share
from coordinator.store import Compare, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import Conflict, NotFound, TideError, Unauthenticated, Unavailable
from tide.api.nodes import Heartbeat, NodeRegistration, WorkerReport

__all__ = ["NodeRoutes", "mint_node_token"]

_encode = msgspec.json.Encoder().encode


class _Register(NodeRegistration, frozen=True, kw_only=True):
    address: str = ""


class _Beat(Heartbeat, frozen=True, kw_only=True):
    address: str = ""


def mint_node_token(cluster_secret: bytes, node: str) -> str:
    mac = hmac.new(cluster_secret, f"node/{node}".encode(), hashlib.sha256).hexdigest()
    return f"tn1.{mac[:40]}"


class NodeRoutes:
    def __init__(
        self,
        *,
        store: Store,
        view: ClusterView,
        cold_starts: ColdStartTracker,
        auth: Auth,
        public_url: str,
        worker_ping_s: float = 5.0,
        mig_ahead: AheadSettings = DEFAULT_AHEAD,
    ) -> None:
        self._store = store
        self._view = view
        self._cold_starts = cold_starts
        self._auth = auth
        self._public_url = public_url
        self._ping_s = worker_ping_s
        self._mig_ahead = mig_ahead

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/node/v1/register", self.register)
        r.add_post("/node/v1/nodes/{node}/heartbeat", self.heartbeat)
        r.add_get("/node/v1/nodes/{node}/desired", self.desired)
        r.add_get("/admin/v1/nodes", self.list_nodes)
        r.add_post("/admin/v1/nodes/{node}/drain", self.drain)
        r.add_post("/admin/v1/nodes/{node}/undrain", self.undrain)
        r.add_get("/admin/v1/workers", self.list_workers)
        r.add_get("/admin/v1/workers/{worker}/logs", self.logs)
        r.add_get("/admin/v1/usage", self.usage)
        r.add_get("/admin/v1/status", self.status)
        MigRoutes(store=self._store, view=self._view, auth=self._auth, ahead=self._mig_ahead).add_to(app)

    def _node_auth(self, request: web.Request) -> str:
        node = request.match_info["node"]
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented, mint_node_token(self._auth.cluster_secret, node)):
            raise Unauthenticated(f"node credential is not valid for node {node!r}; re-register the node")
        return node

    async def register(self, request: web.Request) -> web.Response:
        self._auth.require_node_join(request)
        reg = decode_body(await request.read(), _Register, what="node registration")
        node = reg.inventory.hostname
        if not node or "/" in node:
            raise TideError("inventory.hostname must be a non-empty name without '/'")
        key = nkeys.node(node)
        kv = await self._store.get(key)
        now = time.time()
        old = msgspec.json.decode(kv.value, type=NodeRecord) if kv else None
        record = NodeRecord(
            id=node,
            inventory=reg.inventory,
            address=reg.address,
            registered_at=old.registered_at if old else now,
            last_heartbeat=now,
            draining=old.draining if old else False,
            workers=old.workers if old else [],
        )
        await self._store.put(key, _encode(record))
        return json_response({"nodeId": node, "token": mint_node_token(self._auth.cluster_secret, node)})

    async def heartbeat(self, request: web.Request) -> web.Response:
        node = self._node_auth(request)
        beat = decode_body(await request.read(), _Beat, what="heartbeat")
        now = time.time()
        record = await self._update_node(
            node,
            lambda r: msgspec.structs.replace(
                r,
                inventory=beat.inventory,
                address=beat.address or r.address,
                last_heartbeat=now,
                lost=False,
                workers=beat.workers,
            ),
            missing=f"node {node!r} is not registered; register it first",
            cached=self._view.nodes.get(node),
        )
        return json_response({"ok": True, "draining": record.draining})

    async def desired(self, request: web.Request) -> web.Response:
        """Long-poll: answers when the node's desired workers changed after ``after``."""
        node = self._node_auth(request)
        after = query_int(request, "after", 0, 0, 2**62)
        wait_s = query_int(request, "wait", 25, 0, 60)
        view = self._view
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while view.node_revisions[node] <= after and not view.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await view.node_signal(node).wait(remaining)
        answer = desired_for(
            view,
            node,
            public_url=self._public_url,
            token=lambda ep, w: mint_worker_token(self._auth.cluster_secret, ep, w),
            ping_s=self._ping_s,
        )
        return json_response(answer)

    async def list_nodes(self, request: web.Request) -> web.Response:
        self._auth.require_admin(request)
        now = time.time()
        out = []
        for record, _ in sorted(self._view.nodes.values(), key=lambda n: n[0].id):
            row = msgspec.to_builtins(record)
            row["heartbeatAgeS"] = round(now - record.last_heartbeat, 1)
            out.append(_camel(row))
        return json_response(out)

    async def _set_drain(self, request: web.Request, draining: bool) -> web.Response:
        self._auth.require_admin(request)
        node = request.match_info["node"]
        await self._update_node(
            node,
            lambda r: msgspec.structs.replace(r, draining=draining),
            missing=f"node {node!r} not found; 'tide nodes' lists the nodes",
        )
        return json_response({"id": node, "draining": draining})

    async def _update_node(
        self,
        node: str,
        change: Callable[[NodeRecord], NodeRecord],
        *,
        missing: str,
        cached: tuple[NodeRecord, int] | None = None,
    ) -> NodeRecord:
        """Read, change and write a node record, guarded by its revision, so that a heartbeat
        never undoes a drain (or a lost mark) written a moment before.  NotFound(``missing``)."""
        found = cached
        for _ in range(5):
            if found is None:
                kv = await self._store.get(nkeys.node(node))
                if kv is None:
                    raise NotFound(missing)
                found = (msgspec.json.decode(kv.value, type=NodeRecord), kv.mod_revision)
            record = change(found[0])
            key = nkeys.node(node)
            res = await self._store.txn(
                [Compare(key=key, target="mod", op="==", value=found[1])],
                [Put(key=key, value=_encode(record))],
            )
            if res.succeeded:
                return record
            found = None  # it changed under us: re-read and apply the change again
        raise Conflict(f"node {node!r} kept changing; retry")

    async def drain(self, request: web.Request) -> web.Response:
        return await self._set_drain(request, True)

    async def undrain(self, request: web.Request) -> web.Response:
        return await self._set_drain(request, False)

    async def list_workers(self, request: web.Request) -> web.Response:
        self._auth.require_admin(request)
        ep = request.query.get("endpoint", "")
        reports = {w.worker_id: w for rec, _ in self._view.nodes.values() for w in rec.workers}
        busy = {c.worker_id for c, _, _ in self._view.claims.values()}
        out = []
        for a in sorted(self._view.assignments.values(), key=lambda a: a.created_at):
            if ep and a.endpoint_id != ep:
                continue
            rep = reports.get(a.worker_id)
            cold = self._cold_starts.of_worker(a.worker_id)
            out.append(
                {
                    "workerId": a.worker_id,
                    "endpointId": a.endpoint_id,
                    "nodeId": a.node_id,
                    "gpuType": a.gpu_type,
                    "devices": a.devices,
                    "state": _state(self._view, a.endpoint_id, a.worker_id, rep, busy),
                    "reason": rep.reason if rep else "",
                    "restarts": rep.restarts if rep else 0,
                    "startedAt": rep.started_at if rep else 0.0,
                    "readyAt": self._view.ready_at.get(a.worker_id, 0.0),
                    "coldStart": cold_start_json(cold) if cold is not None else None,
                }
            )
        return json_response(out)

    async def logs(self, request: web.Request) -> web.Response:
        """Proxy to the noded that runs (or ran) the worker."""
        self._auth.require_admin(request)
        worker = request.match_info["worker"]
        tail = query_int(request, "tail", 100, 1, 10_000)
        node = _node_of(self._view, worker)
        if node is None or not node.address:
            raise NotFound(f"worker {worker!r} is not known on any node; 'tide workers' lists them")
        url = f"{node.address}/v1/workers/{worker}/logs?tail={tail}"
        headers = {"Authorization": mint_node_token(self._auth.cluster_secret, node.id)}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.get(url, headers=headers) as resp,
            ):
                body = await resp.json(content_type=None)
                return json_response(body, resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"node {node.id} did not answer for logs ({exc}); is tide-noded running there?"
            ) from None

    async def status(self, request: web.Request) -> web.Response:
        """Cluster summary: endpoints, queues, workers, capacity by GPU type and region."""
        self._auth.require_admin(request)
        view = self._view
        queued = sum(sum(view.queue(ep).counts()) for ep in view.endpoints)
        in_use = {d for a in view.assignments.values() for d in a.devices}
        capacity: dict[tuple[str, str], list[int]] = {}
        for rec, _ in view.nodes.values():
            if rec.lost:
                continue
            for gpu in rec.inventory.gpus:
                cell = capacity.setdefault((gpu.type_id, rec.inventory.region), [0, 0])
                cell[0] += 1
                busy = gpu.uuid in in_use or any(m.uuid in in_use for m in gpu.mig_instances)
                cell[1] += 0 if busy or rec.draining else 1
        return json_response(
            {
                "endpoints": len(view.endpoints),
                "queued": queued,
                "running": len(view.claims),
                "nodes": {"total": len(view.nodes), "lost": sum(1 for r, _ in view.nodes.values() if r.lost)},
                "workers": {"total": len(view.assignments)},
                "capacity": [
                    {"gpuType": t, "region": r, "total": c[0], "free": c[1]}
                    for (t, r), c in sorted(capacity.items())
                ],
            }
        )

    async def usage(self, request: web.Request) -> web.Response:
        self._auth.require_admin(request)
        ep = request.query.get("endpoint", "")
        since = float(query_int(request, "since", 0, 0, 2**40))
        prices: dict[str, float] = request.app[APP_KEY_PRICES]
        res = await self._store.range(nkeys.USAGE)
        now = time.time()
        rows: dict[tuple[str, str], float] = {}
        for kv in res.kvs:
            u = msgspec.json.decode(kv.value, type=UsageRecord)
            if ep and u.endpoint_id != ep:
                continue
            end = u.stopped_at or now
            start = max(u.started_at, since)
            if end > start:
                rows[(u.endpoint_id, u.price_key)] = (
                    rows.get((u.endpoint_id, u.price_key), 0.0) + (end - start) * u.gpus
                )
        out: list[dict[str, Any]] = []
        for (endpoint_id, price_key), seconds in sorted(rows.items()):
            rate = _price(prices, price_key)
            out.append(
                {
                    "endpointId": endpoint_id,
                    "gpuType": price_key,
                    "gpuSeconds": round(seconds, 1),
                    "cost": round(seconds / 3600 * rate, 6),
                }
            )
        return json_response(
            {
                "rows": out,
                "totalGpuSeconds": round(sum(r["gpuSeconds"] for r in out), 1),
                "totalCost": round(sum(r["cost"] for r in out), 6),
                "currency": "USD",
            }
        )


def _state(view: ClusterView, ep: str, worker: str, rep: WorkerReport | None, busy: set[str]) -> str:
    """noded knows the process; the coordinator knows whether its handler takes jobs."""
    state = rep.state if rep else "pending"
    if state not in ("exited", "unhealthy", "stopping") and (
        worker in view.presence.get(ep, {}) or worker in view.seen.get(ep, {})
    ):
        return "running" if worker in busy else "idle"
    return state


def _price(prices: dict[str, float], price_key: str) -> float:
    """A MIG slice costs its share of the card (its catalog's memory or compute share, the
    larger) unless the table prices it."""
    if price_key in prices:
        return prices[price_key]
    card, _, profile = price_key.partition(":")
    base = prices.get(card, 0.0)
    return base * slice_share(card, profile) if profile else base


def _node_of(view: ClusterView, worker: str) -> NodeRecord | None:
    assignment = view.assignments.get(worker)
    if assignment and assignment.node_id in view.nodes:
        return view.nodes[assignment.node_id][0]
    for record, _ in view.nodes.values():
        if any(w.worker_id == worker for w in record.workers):
            return record
    return None


def _camel(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {_camel_key(k): _camel(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)
