"""One row of the route table (``_routes_table``): what the OpenAPI document says of a route."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["AuthKind", "Q", "Raw", "RouteDoc"]

# Who may call a route: nobody needs a key ("none"), an admin key, a viewer key (read-only
# admin routes; or an admin key), a client key for the endpoint (or an admin key), a worker's
# token, a node join key (admin or node scope; or the node's own token for its host), or a
# node's own token.  coordinator/api/_authz.py enforces it (ADMITS: the whole matrix).
AuthKind = Literal["none", "admin", "viewer", "client", "worker", "node-join", "node"]

_PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True, slots=True)
class Q:
    """A query parameter: an integer in ``lo..hi`` (``lo`` None: a string)."""

    name: str
    description: str
    lo: int | None = None
    hi: int | None = None

    def schema(self) -> dict[str, Any]:
        if self.lo is None:
            return {"type": "string"}
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True, slots=True)
class Raw:
    """A body given as JSON Schema (with the components it refers to), not as a msgspec type."""

    schema: dict[str, Any]
    components: tuple[tuple[str, dict[str, Any]], ...] = ()
    content_type: str = "application/json"
    also: tuple[tuple[str, dict[str, Any]], ...] = ()  # more (content type, schema) of one answer


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """``responses``: status -> body type (a msgspec-encodable annotation, a :class:`Raw`, or
    None for no body).  Errors (``errors``, JSON ``{"error": ...}``) are added by auth kind
    too (401/403 for keys), so rows list only what their own handler refuses."""

    method: str
    path: str
    auth: AuthKind
    op_id: str
    summary: str
    responses: dict[int, Any]
    body: Any = None
    query: tuple[Q, ...] = ()
    errors: tuple[int, ...] = ()
    tag: str = ""
    links: dict[str, dict[str, Any]] | None = None  # OpenAPI links of the first 2xx answer
    error_body: Any = None  # the errors' msgspec type; None: ErrorBody ({"error": "..."})

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)
