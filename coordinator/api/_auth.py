"""Who is calling: API keys (by scope), worker tokens and node tokens, checked against the
view (no store read per call).  Which credential a route takes is the route table's
business (``_authz``); this module answers "is this credential that, for this object?".

Worker tokens (``_tokens``) are bound to the endpoint's generation and to the worker's
assignment.  A worker being scaled down keeps a valid token while it finishes: for
``REMOVED_GRACE_S`` after this replica saw its assignment go (noded sends SIGTERM and
SIGKILLs after its stop grace, 30 s by default: the SDK's last job-done, ping and job-stop
come within that), and for as long as it still holds a claim on a job of the endpoint (a
long job ends with its job-done, or is requeued when its claim lapses).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Final, Literal

import msgspec
from aiohttp import web

from coordinator._node_schema import NodeRecord, nkeys
from coordinator.api._tokens import (
    WorkerToken,
    generation,
    mint_hand_token,
    mint_node_token,
    mint_worker_token,
    parse_node_token,
    parse_worker_token,
)
from coordinator.store import Store
from coordinator.view import ClusterView
from tide.api.endpoints import ApiKey
from tide.api.errors import NotFound, PermissionDenied, Unauthenticated

__all__ = ["REMOVED_GRACE_S", "Auth", "JoinCredential", "hash_key", "presented_key"]

REMOVED_GRACE_S: Final = 60.0
_VIEW_LAG_S: Final = 1.0  # how long a valid token waits for the view to show what it names

JoinCredential = Literal["admin", "join", "token"]


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def presented_key(request: web.Request, *, allow_query: bool = False) -> str:
    header = request.headers.get("Authorization", "").strip()
    if header.lower().startswith("bearer "):
        header = header[7:].strip()
    if not header and allow_query:
        header = request.query.get("api_key", "")
    if not header:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    return header


class Auth:
    def __init__(
        self, view: ClusterView, *, admin_key_hashes: list[str], cluster_secret: bytes, store: Store
    ) -> None:
        self._view = view
        self._store = store
        self._admin = set(admin_key_hashes)
        self.cluster_secret = cluster_secret

    # -- API keys --------------------------------------------------------
    def api_key(self, request: web.Request, *, allow_query: bool = False) -> ApiKey | None:
        """The caller's key (None = the bootstrap admin key); raises if unknown or revoked."""
        digest = hash_key(presented_key(request, allow_query=allow_query))
        if digest in self._admin:
            return None
        key = self._view.apikeys.get(digest)
        if key is None or key.revoked:
            raise Unauthenticated(
                "API key is not valid (unknown or revoked); create one with 'tide keys create'"
            )
        return key

    def require_admin(self, request: web.Request) -> None:
        key = self.api_key(request, allow_query=True)
        if key is not None and key.scope != "admin":
            raise PermissionDenied(f"key {key.name!r} has scope {key.scope}; this route needs an admin key")

    def require_viewer(self, request: web.Request) -> None:
        """Read-only admin routes and /metrics: an admin key or a key of scope viewer."""
        key = self.api_key(request, allow_query=True)
        if key is not None and key.scope not in ("admin", "viewer"):
            raise PermissionDenied(
                f"key {key.name!r} has scope {key.scope}; this route needs a viewer or admin key"
            )

    def require_client(self, request: web.Request, ep: str) -> ApiKey | None:
        """The key that may use ``ep`` (None = the bootstrap admin key)."""
        if "api_key" in request.query:
            raise Unauthenticated(
                "?api_key= is not accepted on /v2 routes (URLs end up in logs): send the key as "
                "'Authorization: Bearer <key>'"
            )
        key = self.api_key(request)
        if key is not None and key.scope != "admin":
            if key.scope != "endpoints":
                raise PermissionDenied(
                    f"key {key.name!r} has scope {key.scope}; /v2 routes need a key of scope endpoints "
                    "('tide keys create NAME --endpoint EP')"
                )
            if key.endpoint_ids and ep not in key.endpoint_ids:
                raise PermissionDenied(f"key {key.name!r} may not use endpoint {ep!r}")
        if ep not in self._view.endpoints:
            raise NotFound(f"endpoint {ep!r} not found; 'tide endpoint list' shows the endpoints")
        return key

    def join_credential(self, request: web.Request) -> JoinCredential:
        """What registers a node: an admin key, a node join key (new hosts only), or a node
        token (its own host again; the register handler checks it against the host name)."""
        if presented_key(request).startswith("tn2."):
            return "token"
        key = self.api_key(request)
        if key is None or key.scope == "admin":
            return "admin"
        if key.scope != "node":
            raise PermissionDenied(f"key {key.name!r} may not register nodes (needs scope node or admin)")
        return "join"

    # -- workers ---------------------------------------------------------
    def worker_token(self, ep: str, worker: str) -> str:
        """An assigned worker's token (the endpoint must be in the view)."""
        return mint_worker_token(self.cluster_secret, ep, generation(self._endpoint(ep)), worker)

    def hand_token(self, ep: str, worker: str, ttl_s: int) -> tuple[str, int]:
        """A token for a worker started by hand, and when it expires (unix seconds)."""
        expires = int(time.time()) + ttl_s
        gen = generation(self._endpoint(ep))
        return mint_hand_token(self.cluster_secret, ep, gen, worker, expires), expires

    def _endpoint(self, ep: str) -> float:
        found = self._view.endpoints.get(ep)
        if found is None:
            raise NotFound(f"endpoint {ep!r} not found; 'tide endpoint list' shows the endpoints")
        return found[0].created_at

    async def require_worker(self, request: web.Request, ep: str, worker: str) -> None:
        claims = parse_worker_token(self.cluster_secret, presented_key(request), ep, worker)
        if claims is None:
            raise Unauthenticated(f"worker token is not valid for worker {worker!r} of endpoint {ep!r}")
        deadline = time.monotonic() + _VIEW_LAG_S
        while (refusal := self._worker_refusal(claims, ep, worker)) is not None:
            # A valid MAC: what the token names may be newer than this replica's view
            # (an endpoint or a placement a moment old).  Wait for the watch briefly.
            expired = 0 < claims.expires < time.time()
            if expired or worker in self._view.removed_workers or time.monotonic() > deadline:
                raise Unauthenticated(refusal)
            await asyncio.sleep(0.05)

    def _worker_refusal(self, claims: WorkerToken, ep: str, worker: str) -> str | None:
        view = self._view
        found = view.endpoints.get(ep)
        if found is None or generation(found[0].created_at) != claims.gen:
            return f"endpoint {ep!r} this worker token was made for was deleted (or re-created)"
        if claims.expires:
            if claims.expires < time.time():
                return f"worker token of {worker!r} expired; make another with 'tide worker-token'"
            return None
        assignment = view.assignments.get(worker)
        if assignment is not None and assignment.endpoint_id == ep:
            return None
        removed = view.removed_at.get(worker)
        if removed is not None and time.monotonic() - removed < REMOVED_GRACE_S:
            return None  # scaled down a moment ago: let it finish and exit cleanly
        if any(c.worker_id == worker for _, c in view.claims_of(ep)):
            return None  # still holds a job of the endpoint: its result is wanted
        return f"worker {worker!r} is no longer assigned to endpoint {ep!r}; its token is not valid"

    # -- nodes -----------------------------------------------------------
    def node_token(self, record: NodeRecord) -> str:
        return mint_node_token(self.cluster_secret, record.id, generation(record.registered_at))

    async def require_node(self, request: web.Request, node: str) -> NodeRecord:
        """The node's record, if the caller presents the token of its current registration."""
        gen = parse_node_token(self.cluster_secret, presented_key(request), node)
        if gen is None:
            raise Unauthenticated(f"node credential is not valid for node {node!r}; re-register the node")
        found = self._view.nodes.get(node)
        record = found[0] if found is not None else None
        if record is None or generation(record.registered_at) != gen:
            # A valid MAC: the view may lag the registration; the store decides.
            kv = await self._store.get(nkeys.node(node))
            record = msgspec.json.decode(kv.value, type=NodeRecord) if kv is not None else None
        if record is None or generation(record.registered_at) != gen:
            raise Unauthenticated(
                f"node credential of {node!r} is no longer valid (the node was forgotten or "
                "re-registered by an admin); re-register the node"
            )
        return record
