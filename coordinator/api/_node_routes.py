"""The node API (/node/v1, called by tide-noded).

noded never talks to etcd: it registers with a join key (an admin- or
node-scoped API key), then uses its own credential (a node token: an HMAC of
its node id and registration generation, ``_tokens``) to heartbeat, to
long-poll its desired workers and to register again after a restart.

Node identity: a join key registers a *new* host once; registering a known
host again takes that host's node token (noded keeps it in its state dir) or an
admin key (which gives the host a new generation: the old token stops working).
A host is re-imaged with ``tide node forget HOST`` and then joins as new.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
from aiohttp import web

from coordinator._node_schema import NodeRecord, nkeys
from coordinator.api._auth import Auth
from coordinator.api._authz import JOIN_CREDENTIAL, NODE_RECORD
from coordinator.api._desired import desired_for
from coordinator.api._http import decode_body, json_response, query_int
from coordinator.api._names import check_node_address, check_node_id
from coordinator.store import Compare, KeyValue, Put, Store
from coordinator.view import ClusterView
from tide.api.errors import Conflict, NotFound, PermissionDenied
from tide.api.nodes import Heartbeat, NodeRegistration

__all__ = ["NodeRoutes", "update_node"]

_encode = msgspec.json.Encoder().encode


class _Register(NodeRegistration, frozen=True, kw_only=True):
    address: str = ""


class _Beat(Heartbeat, frozen=True, kw_only=True):
    address: str = ""


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

    async def register(self, request: web.Request) -> web.Response:
        reg = decode_body(await request.read(), _Register, what="node registration")
        node = check_node_id(reg.inventory.hostname)
        check_node_address(reg.address)
        key = nkeys.node(node)
        kv = await self._store.get(key)
        old = msgspec.json.decode(kv.value, type=NodeRecord) if kv else None
        credential = request[JOIN_CREDENTIAL]
        if credential == "token":
            await self._auth.require_node(request, node)  # this host's current token, or a 401
        elif credential == "join" and old is not None:
            raise PermissionDenied(
                f"host {node!r} is already registered: a join key registers new hosts only. Its noded "
                "registers again with its node token (kept in its state dir); to re-image the host, "
                f"have an admin run 'tide node forget {node}' first"
            )
        now = time.time()
        # The host's own token keeps its generation; an admin (or a new host) starts a new one.
        registered_at = old.registered_at if old is not None and credential == "token" else now
        record = NodeRecord(
            id=node,
            inventory=reg.inventory,
            address=reg.address,
            registered_at=registered_at,
            last_heartbeat=now,
            draining=old.draining if old else False,
            workers=old.workers if old else [],
        )
        value = _encode(record)
        guard = Compare(key=key, target="mod", op="==", value=kv.mod_revision) if kv else None
        res = await self._store.txn(
            [guard or Compare(key=key, target="create", op="==", value=0)], [Put(key=key, value=value)]
        )
        if not res.succeeded:  # two registrations of one host at once: one wins
            raise Conflict(f"host {node!r} was registered concurrently; retry")
        self._view.note_local_put(
            KeyValue(key=key, value=value, create_revision=res.revision, mod_revision=res.revision, version=1)
        )
        return json_response({"nodeId": node, "token": self._auth.node_token(record)})

    async def heartbeat(self, request: web.Request) -> web.Response:
        node = request[NODE_RECORD].id
        beat = decode_body(await request.read(), _Beat, what="heartbeat")
        check_node_address(beat.address)
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
        node = request[NODE_RECORD].id
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
            token=self._auth.worker_token,
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
