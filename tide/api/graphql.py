"""RunPod's GraphQL management API as Tide serves it (``POST /graphql``): the request and
the error shape.  The operations and their types are the SDL in coordinator/api/_graphql_schema.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["GraphQLError", "GraphQLErrors", "GraphQLRequest"]


class GraphQLRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    extensions: dict[str, Any] | None = None


class GraphQLError(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    path: list[str | int] | None = None


class GraphQLErrors(msgspec.Struct, frozen=True, kw_only=True):
    """Every error of ``/graphql``: ``{"errors": [{"message": ...}]}`` (the runpod SDK raises
    ``QueryError(errors[0].message)``; a 401 raises its ``AuthenticationError``)."""

    errors: list[GraphQLError]
    data: dict[str, Any] | None = None
