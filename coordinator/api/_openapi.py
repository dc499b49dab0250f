"""The OpenAPI 3.1 document of every route, generated from the route table and the msgspec
wire types, served at ``GET /openapi.json`` (no key: it says what the API accepts, nothing
about the cluster; the same document for every caller, like /healthz)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import msgspec
from aiohttp import web

from coordinator.api import _routes_table as table
from coordinator.api._cluster_routes import camel_key as _camel_key
from coordinator.api._route_doc import AuthKind, Raw, RouteDoc
from tide.api.responses import ErrorBody

__all__ = ["add_openapi_route", "build_document"]

_REF = "#/components/schemas/{name}"

_SCHEMES: dict[AuthKind, tuple[str, str]] = {
    "admin": ("adminKey", "the bootstrap admin key or an API key of scope admin"),
    "viewer": ("viewerKey", "an API key of scope viewer (read-only), or an admin key"),
    "client": ("clientKey", "an API key for the endpoint (scope endpoints), or an admin key"),
    "worker": (
        "workerToken",
        "the worker's own token (RUNPOD_AI_API_KEY), valid for one endpoint and worker",
    ),
    "node-join": (
        "nodeJoinKey",
        "an API key of scope node (registers a new GPU host), the host's own node token (registers "
        "it again), or an admin key",
    ),
    "node": ("nodeToken", "the node's own token, answered by /node/v1/register"),
}
# Refusals every route of an auth kind can answer, beside the ones its own row lists.
_AUTH_ERRORS: dict[AuthKind, tuple[int, ...]] = {
    "none": (),
    "admin": (401, 403, 503),
    "viewer": (401, 403, 503),
    "client": (401, 403, 404, 503),
    "worker": (401, 503),
    "node-join": (400, 401, 403, 409, 503),
    "node": (401, 503),
}
_ERRORS = {
    400: "invalid input: the error says which",
    401: "no key, or a key that is not valid here",
    403: "the key is valid but not for this",
    404: "no such object",
    409: "conflicts with the object's state, or changed concurrently; re-read and retry",
    410: "the job was cancelled before it answered",
    413: "body over the route's limit",
    429: "over the endpoint's rate or concurrency limit (Retry-After says when to retry)",
    500: "the worker failed the job (the message says how)",
    502: "the worker's answer is not what the route promises",
    503: "a dependency (the store, a node) is unavailable; retry",
    504: "the job timed out (the endpoint's executionTimeout)",
}


def build_document(routes: list[RouteDoc] | None = None) -> dict[str, Any]:
    rows = table.ROUTES if routes is None else routes
    errors = [r.error_body for r in rows if r.error_body is not None]
    types = list(dict.fromkeys([ErrorBody, *errors, table.NODE_RECORD, *_types(rows)]))
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    components.update(_camel_view(components, table.NODE_RECORD.__name__, "NodeView"))
    components["NodeView"]["properties"]["heartbeatAgeS"] = {"type": "number"}
    components["NodeView"]["required"].append("heartbeatAgeS")
    for row in rows:
        for part in (row.body, *row.responses.values()):
            if isinstance(part, Raw):
                components.update(part.components)
    paths: dict[str, dict[str, Any]] = {}
    for row in rows:
        paths.setdefault(row.path, {})[row.method.lower()] = _operation(row, by_type)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tide",
            "version": _version(),
            "description": "Serverless GPU inference on bare metal; the public API is RunPod Serverless "
            'wire-compatible. Every error is JSON {"error": "..."}.',
        },
        "tags": [{"name": t} for t in dict.fromkeys(r.tag for r in rows)],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                name: {"type": "http", "scheme": "bearer", "description": text}
                for name, text in _SCHEMES.values()
            },
        },
    }


def add_openapi_route(app: web.Application) -> None:
    body = msgspec.json.encode(build_document())  # once: the document is fixed per build

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)


def _version() -> str:
    try:
        return metadata.version("tide")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _types(rows: list[RouteDoc]) -> list[Any]:
    parts = [p for r in rows for p in (r.body, *r.responses.values())]
    return [p for p in parts if p is not None and not isinstance(p, Raw)]


def _content(part: Any, by_type: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(part, Raw):
        return {ctype: {"schema": schema} for ctype, schema in ((part.content_type, part.schema), *part.also)}
    return {"application/json": {"schema": by_type[part]}}


def _operation(row: RouteDoc, by_type: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": row.op_id, "summary": row.summary, "tags": [row.tag]}
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in row.path_params
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": q.schema()}
        for q in row.query
    ]
    if params:
        op["parameters"] = params
    if row.body is not None:
        # A worker's empty result is {} (the SDK sends none for a handler that returns None).
        op["requestBody"] = {"required": row.auth != "worker", "content": _content(row.body, by_type)}
    if row.auth != "none":
        op["security"] = [{_SCHEMES[row.auth][0]: []}]
    responses: dict[str, Any] = {}
    for status, part in row.responses.items():
        answer: dict[str, Any] = {"description": "OK" if status < 300 else "see the body"}
        if part is not None:
            answer["content"] = _content(part, by_type)
        if row.links and 200 <= status < 300 and not responses:
            answer["links"] = row.links
        responses[str(status)] = answer
    error = {"$ref": _REF.format(name=(row.error_body or ErrorBody).__name__)}
    for status in sorted({*row.errors, *_AUTH_ERRORS[row.auth]}):
        responses.setdefault(
            str(status), {"description": _ERRORS[status], "content": {"application/json": {"schema": error}}}
        )
    op["responses"] = responses
    return op


def _camel_view(components: dict[str, Any], root: str, name: str) -> dict[str, Any]:
    """``root``'s schema and those it refers to, with camelCase property names, as the admin
    API's recursive camelCasing shows a snake_case record; ``root`` renamed ``name``, the
    others suffixed ``View``."""
    names: dict[str, str] = {}

    def visit(n: str) -> None:
        if n not in names:
            names[n] = name if n == root else f"{n}View"
            _refs(components[n], visit)

    visit(root)
    return {new: {**_camelize(components[old], names), "title": new} for old, new in names.items()}


def _refs(node: Any, found: Any) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                found(v.rsplit("/", 1)[1])
            else:
                _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def _camelize(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_camelize(v, names) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref":
            out[k] = _REF.format(name=names[v.rsplit("/", 1)[1]])
        elif k == "properties":
            out[k] = {_camel_key(p): _camelize(s, names) for p, s in v.items()}
        elif k == "required":
            out[k] = [_camel_key(p) for p in v]
        else:
            out[k] = _camelize(v, names)
    return out
