"""Code bundles (``tide deploy``): upload into the cluster's object store, and noded's fetch.

``PUT /admin/v1/bundles/{sha}`` stores a bundle at ``bundles/<sha>`` once: the body must hash to
``sha`` (content addressing is what makes a re-deploy a no-op and a fetched bundle checkable),
and a second upload of the same bytes is a 200 with ``created: false``.  ``GET`` (viewer) says
whether it is there, so the CLI can skip the upload.  Nodes fetch the bytes through
``/node/v1/nodes/{node}/bundles/{sha}`` with their own token; workers never see the store.
"""

from __future__ import annotations

import hashlib

import msgspec
from aiohttp import web

from coordinator.api._http import json_response, read_body
from tide.api.bundles import MAX_BUNDLE_BYTES, BundleOut, bundle_key, is_sha
from tide.api.errors import AlreadyExists, InvalidArgument, NotFound
from tiered_storage import ObjectStore

__all__ = ["BundleRoutes"]


def _sha(request: web.Request) -> str:
    sha = request.match_info["sha"]
    if not is_sha(sha):
        raise InvalidArgument(f"bundle id {sha[:80]!r}: 64 lowercase hex digits, the SHA-256 of the bundle")
    return sha


class BundleRoutes:
    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_put("/admin/v1/bundles/{sha}", self.put)
        r.add_get("/admin/v1/bundles/{sha}", self.head)
        r.add_get("/node/v1/nodes/{node}/bundles/{sha}", self.fetch)

    async def put(self, request: web.Request) -> web.Response:
        sha = _sha(request)
        data = await read_body(request, MAX_BUNDLE_BYTES)
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise InvalidArgument(
                f"the body's SHA-256 is {got}, not {sha}: upload the bundle under its own id"
            )
        try:
            await self._objects.put(bundle_key(sha), data, if_absent=True)
            created = True
        except AlreadyExists:
            created = False
        return json_response(msgspec.to_builtins(BundleOut(id=sha, size=len(data), created=created)))

    async def head(self, request: web.Request) -> web.Response:
        sha = _sha(request)
        try:
            meta = await self._objects.head(bundle_key(sha))
        except NotFound:
            raise NotFound(f"no bundle {sha}: upload it with `tide deploy`") from None
        return json_response(msgspec.to_builtins(BundleOut(id=sha, size=meta.size)))

    async def fetch(self, request: web.Request) -> web.Response:
        sha = _sha(request)
        try:
            data = await self._objects.get(bundle_key(sha))
        except NotFound:
            raise NotFound(f"no bundle {sha}: deploy it again (`tide deploy`)") from None
        return web.Response(body=data, content_type="application/x-tar")
