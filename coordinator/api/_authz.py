"""The authorization table: which credentials each route admits, enforced for every request.

Every row of the route table (``_routes_table``) names its ``AuthKind``; ``ADMITS`` below
says which kinds of credential each ``AuthKind`` admits.  The middleware looks up the matched
route's row and runs its check before any handler runs, so no handler can forget one; a
served route without a row is refused (and tests/coordinator/api/test_openapi.py fails on
it).  tests/coordinator/api/test_authz_matrix.py sends every row x every credential kind over
HTTP and checks the answer against ``ADMITS``::

    row \\ credential   admin  client  viewer  node-join  node  worker
    none               yes    yes     yes     yes        yes   yes     (no key needed)
    admin              yes    -       -       -          -     -       (also ?api_key=)
    viewer             yes    -       yes     -          -     -       (also ?api_key=)
    client             yes    yes*    -       -          -     -       * its endpoints only
    node-join          yes    -       -       yes**      yes** -       ** see below
    node               -      -       -       -          yes*  -       * its own node only
    worker             -      -       -       -          -     yes*    * its endpoint and worker

``client`` is an API key of scope ``endpoints``; ``viewer`` a key of scope ``viewer``
(read-only admin GETs, /metrics); ``node-join`` a key of scope ``node``.  Registering
(``node-join``): a join key registers a *new* host only; the host's own node token
re-registers it; an admin key does both (and gives the host a new token generation).  The
row check admits the credential kind; the register handler decides by the host name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from aiohttp import web

from coordinator._node_schema import NodeRecord
from coordinator.api._auth import Auth, JoinCredential
from coordinator.api._route_doc import AuthKind, RouteDoc
from tide.api.endpoints import ApiKey
from tide.api.errors import PermissionDenied

__all__ = [
    "ADMITS",
    "CLIENT_KEY",
    "CREDENTIALS",
    "JOIN_CREDENTIAL",
    "NODE_RECORD",
    "Credential",
    "authz_middleware",
]

Credential = Literal["admin", "client", "viewer", "node-join", "node", "worker"]
CREDENTIALS: Final[tuple[Credential, ...]] = ("admin", "client", "viewer", "node-join", "node", "worker")

ADMITS: Final[dict[AuthKind, frozenset[Credential]]] = {
    "none": frozenset(CREDENTIALS),
    "admin": frozenset({"admin"}),
    "viewer": frozenset({"admin", "viewer"}),
    "client": frozenset({"admin", "client"}),
    "node-join": frozenset({"admin", "node-join", "node"}),
    "node": frozenset({"node"}),
    "worker": frozenset({"worker"}),
}

# What the check found, for the handler: the client's key (None: the bootstrap admin key),
# how a node registers, the calling node's record.
CLIENT_KEY: Final = web.RequestKey[ApiKey | None]("tide.client_key")
JOIN_CREDENTIAL: Final = web.RequestKey("tide.join", str)
NODE_RECORD: Final = web.RequestKey("tide.node", NodeRecord)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authz_middleware(auth: Auth, routes: list[RouteDoc]) -> Any:
    """The middleware that enforces ``routes``' auth kinds (HEAD is checked as its GET)."""
    kinds: dict[tuple[str, str], AuthKind] = {(r.method, r.path): r.auth for r in routes}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if resource is None:  # no route matched: the 404/405 answers as it is
            return await handler(request)
        method = "GET" if request.method == "HEAD" else request.method
        kind = kinds.get((method, resource.canonical))
        if kind is None:
            raise PermissionDenied(f"{method} {resource.canonical} has no row in the authorization table")
        await _check(auth, kind, request)
        return await handler(request)

    return middleware


async def _check(auth: Auth, kind: AuthKind, request: web.Request) -> None:
    match = request.match_info
    if kind == "none":
        return
    if kind == "admin":
        auth.require_admin(request)
    elif kind == "viewer":
        auth.require_viewer(request)
    elif kind == "client":
        request[CLIENT_KEY] = auth.require_client(request, match["ep"])
    elif kind == "node-join":
        credential: JoinCredential = auth.join_credential(request)
        request[JOIN_CREDENTIAL] = credential
    elif kind == "node":
        request[NODE_RECORD] = await auth.require_node(request, match["node"])
    else:
        await auth.require_worker(request, match["ep"], match["worker"])
