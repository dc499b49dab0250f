"""The node API (/node/v1, called by tide-noded).

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

import msgspec
from aiohttp import web

from coordinator._node_schema import NodeRecord, nkeys
from coordinator.api._desired import desired_for
from coordinator.api._http import Auth, decode_body, json_response, mint_worker_token, query_int
from coordinator.api._names import check_node_id
from coordinator.store import Compare, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import Conflict, NotFound, Unauthenticated
from tide.api.nodes import Heartbeat, NodeRegistration

__all__ = ["NodeRoutes", "mint_node_token", "update_node"]

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
        auth: Auth,
        public_url: str,
        worker_ping_s: float = 5.0,
    ) -> None:
        self._store = store
        self._view = view
        self._auth = auth
        self._public_url = public_url
        self._ping_s = worker_ping_s

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/node/v1/register", self.register)
        r.add_post("/node/v1/nodes/{node}/heartbeat", self.heartbeat)
        r.add_get("/node/v1/nodes/{node}/desired", self.desired)

    def _node_auth(self, request: web.Request) -> str:
        node = request.match_info["node"]
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented, mint_node_token(self._auth.cluster_secret, node)):
            raise Unauthenticated(f"node credential is not valid for node {node!r}; re-register the node")
        return node

    async def register(self, request: web.Request) -> web.Response:
        self._auth.require_node_join(request)
        reg = decode_body(await request.read(), _Register, what="node registration")
        node = check_node_id(reg.inventory.hostname)
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
        record = await update_node(
            self._store,
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


async def update_node(
    store: Store,
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
            kv = await store.get(nkeys.node(node))
            if kv is None:
                raise NotFound(missing)
            found = (msgspec.json.decode(kv.value, type=NodeRecord), kv.mod_revision)
        record = change(found[0])
        key = nkeys.node(node)
        res = await store.txn(
            [Compare(key=key, target="mod", op="==", value=found[1])],
            [Put(key=key, value=_encode(record))],
        )
        if res.succeeded:
            return record
        found = None  # it changed under us: re-read and apply the change again
    raise Conflict(f"node {node!r} kept changing; retry")
