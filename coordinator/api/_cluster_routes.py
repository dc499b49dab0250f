"""The admin routes about the cluster's nodes, workers, logs and usage (/admin/v1)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from coordinator._node_schema import NodeRecord, UsageRecord, nkeys
from coordinator.api._app_keys import APP_KEY_PRICES
from coordinator.api._auth import Auth
from coordinator.api._http import json_response, query_int
from coordinator.api._node_routes import update_node
from coordinator.jobs import ColdStartTracker, cold_start_json
from coordinator.scheduling import slice_share
from coordinator.store import Compare, Delete, Store
from coordinator.view import ClusterView
from tide.api.errors import Conflict, NotFound, Unavailable
from tide.api.nodes import WorkerReport

__all__ = ["ClusterRoutes"]


class ClusterRoutes:
    def __init__(self, *, store: Store, view: ClusterView, cold_starts: ColdStartTracker, auth: Auth) -> None:
        self._store = store
        self._view = view
        self._cold_starts = cold_starts
        self._auth = auth

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/admin/v1/nodes", self.list_nodes)
        r.add_delete("/admin/v1/nodes/{node}", self.forget)
        r.add_post("/admin/v1/nodes/{node}/drain", self.drain)
        r.add_post("/admin/v1/nodes/{node}/undrain", self.undrain)
        r.add_get("/admin/v1/workers", self.list_workers)
        r.add_get("/admin/v1/workers/{worker}/logs", self.logs)
        r.add_get("/admin/v1/usage", self.usage)
        r.add_get("/admin/v1/status", self.status)

    async def list_nodes(self, request: web.Request) -> web.Response:
        now = time.time()
        out = []
        for record, _ in sorted(self._view.nodes.values(), key=lambda n: n[0].id):
            row = msgspec.to_builtins(record)
            row["heartbeatAgeS"] = round(now - record.last_heartbeat, 1)
            out.append(_camel(row))
        return json_response(out)

    async def _set_drain(self, request: web.Request, draining: bool) -> web.Response:
        node = request.match_info["node"]
        await update_node(
            self._store,
            node,
            lambda r: msgspec.structs.replace(r, draining=draining),
            missing=f"node {node!r} not found; 'tide nodes' lists the nodes",
        )
        return json_response({"id": node, "draining": draining})

    async def forget(self, request: web.Request) -> web.Response:
        """Forget a host so it can be re-imaged: its record (and with it its node token's
        generation) and its MIG layouts go; its join key then registers it as a new host."""
        node = request.match_info["node"]
        kv = await self._store.get(nkeys.node(node))
        if kv is None:
            raise NotFound(f"node {node!r} not found; 'tide nodes' lists the nodes")
        record = msgspec.json.decode(kv.value, type=NodeRecord)
        running = self._view.assignments_of(node)
        if running and not record.lost:
            raise Conflict(
                f"node {node!r} still runs {len(running)} worker(s): drain it first ('tide node drain "
                f"{node}') and forget it once 'tide workers' shows none there, or once it is lost"
            )
        res = await self._store.txn(
            [Compare(key=kv.key, target="mod", op="==", value=kv.mod_revision)],
            [Delete(key=kv.key), Delete(key=nkeys.MIGLAYOUTS + f"{node}/".encode(), prefix=True)],
        )
        if not res.succeeded:
            raise Conflict(f"node {node!r} changed while it was being forgotten; retry")
        return json_response({"id": node, "forgotten": True})

    async def drain(self, request: web.Request) -> web.Response:
        return await self._set_drain(request, True)

    async def undrain(self, request: web.Request) -> web.Response:
        return await self._set_drain(request, False)

    async def list_workers(self, request: web.Request) -> web.Response:
        ep = request.query.get("endpoint", "")
        # Only the host a worker is placed on reports its state (as the scheduler reads it).
        reports = {(rec.id, w.worker_id): w for rec, _ in self._view.nodes.values() for w in rec.workers}
        busy = {c.worker_id for c, _, _ in self._view.claims.values()}
        out = []
        for a in sorted(self._view.assignments.values(), key=lambda a: a.created_at):
            if ep and a.endpoint_id != ep:
                continue
            rep = reports.get((a.node_id, a.worker_id))
            cold = self._cold_starts.of_worker(a.worker_id)
            out.append(
                {
                    "workerId": a.worker_id,
                    "endpointId": a.endpoint_id,
                    "nodeId": a.node_id,
                    "gpuType": a.gpu_type,
                    "devices": a.devices,
                    "state": "suspended"
                    if a.suspended
                    else _state(self._view, a.endpoint_id, a.worker_id, rep, busy),
                    # Issue 16: host RAM a suspended worker holds (noded's report), and since when.
                    "ramBytes": rep.rss_bytes if rep and a.suspended else 0,
                    "suspendedAt": a.suspended_at if a.suspended else 0.0,
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
        worker = request.match_info["worker"]
        tail = query_int(request, "tail", 100, 1, 10_000)
        node = _node_of(self._view, worker)
        if node is None or not node.address:
            raise NotFound(f"worker {worker!r} is not known on any node; 'tide workers' lists them")
        url = f"{node.address}/v1/workers/{worker}/logs?tail={tail}"
        headers = {"Authorization": self._auth.node_token(node)}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
                s.get(url, headers=headers, allow_redirects=False) as resp,
            ):
                if 300 <= resp.status < 400:  # noded never redirects: following one is an SSRF
                    raise ValueError(resp.status)
                body = await resp.json(content_type=None)
                return json_response(body, resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"node {node.id} did not answer for logs ({exc}); is tide-noded running there?"
            ) from None
        except ValueError:  # an answer that is not JSON: not tide-noded's
            raise Unavailable(
                f"node {node.id} answered for logs with a redirect or something other than JSON; is "
                f"tide-noded listening at its address {node.address[:80]!r}?"
            ) from None

    async def status(self, request: web.Request) -> web.Response:
        """Cluster summary: endpoints, queues, workers, capacity by GPU type and region."""
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
        return {camel_key(k): _camel(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel(v) for v in obj]
    return obj


def camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p.title() for p in rest)
