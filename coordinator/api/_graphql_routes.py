"""``POST /graphql``: RunPod's management API for the ``runpod`` SDK (``RUNPOD_API_BASE_URL``
pointed at the coordinator; the SDK posts ``{"query": ...}`` to ``$RUNPOD_API_BASE_URL/graphql``
with ``Authorization: Bearer <key>``).

graphql-core parses and validates every request against ``_graphql_schema.SCHEMA`` before
anything runs.  Keys: the route's row admits viewer and admin keys (queries); a mutation
needs an admin key.  Every error is GraphQL's shape, ``{"errors": [{"message": ...}]}``: a
request that does not parse or validate is a 400, an operation refused by the taxonomy
carries its status (400, 404, 409), a missing or wrong key a 401 (the SDK raises its
``AuthenticationError``), a key without the scope a 403.  Never a 500 for bad input.
"""

from __future__ import annotations

import logging
from inspect import isawaitable
from typing import Any, Final

import msgspec
from aiohttp import web
from graphql import ExecutionResult, GraphQLError, OperationType, execute, get_operation_ast, parse, validate

from coordinator.api._auth import Auth
from coordinator.api._endpoint_writes import EndpointWrites
from coordinator.api._graphql_resolvers import Resolvers
from coordinator.api._graphql_schema import SCHEMA
from coordinator.api._http import json_response, read_body
from coordinator.jobs import JobService, decode_json
from coordinator.store import Store
from coordinator.view import ClusterView
from tide.api.errors import InvalidArgument, TideError
from tide.api.graphql import GraphQLRequest

__all__ = ["GraphQLRoutes"]

log = logging.getLogger("tide.coordinator.graphql")
_LIMIT: Final = 1 << 20  # a management request is small
_SERVED: Final = (
    "Tide serves queries myself { endpoints podTemplates } and gpuTypes, and mutations saveTemplate, "
    "deleteTemplate, saveEndpoint, deleteEndpoint, updateEndpointTemplate"
)


def _errors(messages: list[str], status: int) -> web.Response:
    return json_response({"errors": [{"message": m} for m in messages]}, status)


def _hint(error: GraphQLError) -> str:
    """Validation messages, plus what is served where the operation itself is unknown."""
    root = error.message.replace('"', "'")  # graphql-core 3.3 quotes names with ', 3.2 with "
    if "on type 'Query'" in root or "on type 'Mutation'" in root:
        return f"{error.message} (not supported by Tide: {_SERVED})"
    return error.message


class GraphQLRoutes:
    def __init__(
        self, *, store: Store, view: ClusterView, jobs: JobService, auth: Auth, prices: dict[str, float]
    ) -> None:
        writes = EndpointWrites(store=store, view=view, jobs=jobs)
        self._resolvers = Resolvers(store=store, view=view, writes=writes, prices=prices)
        self._auth = auth

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/graphql", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await read_body(request, _LIMIT)
        if not raw.strip():
            raise InvalidArgument('/graphql needs a JSON body: {"query": "...", "variables": {...}}')
        body = msgspec.convert(decode_json(raw, "GraphQL request"), GraphQLRequest)
        try:
            document = parse(body.query)
        except GraphQLError as exc:
            return _errors([f"GraphQL syntax error: {exc.message}"], 400)
        invalid = validate(SCHEMA, document)
        if invalid:
            return _errors([_hint(e) for e in invalid], 400)
        operation = get_operation_ast(document, body.operation_name)
        if operation is None:
            return _errors(["name the operation to run in operationName (the document has several)"], 400)
        if operation.operation != OperationType.QUERY:
            self._auth.require_admin(request)  # subscriptions fail validation: no Subscription type
        result = execute(
            SCHEMA,
            document,
            root_value=self._resolvers.root(),
            variable_values=body.variables,
            operation_name=body.operation_name,
        )
        if isawaitable(result):
            result = await result
        return self._answer(result)

    def _answer(self, result: ExecutionResult) -> web.Response:
        if not result.errors:
            return json_response({"data": result.data})
        status, messages = 400, []
        for error in result.errors:
            cause = error.original_error
            if isinstance(cause, TideError):
                status = cause.http_status if status == 400 else status
                messages.append(cause.message)
            elif isinstance(cause, msgspec.ValidationError):
                messages.append(f"invalid input: {cause}")
            elif cause is not None:
                log.error("GraphQL resolver failed", exc_info=cause)
                status = 500
                messages.append("internal error; the coordinator's log has the details")
            else:
                messages.append(error.message)  # variables that do not fit their types
        out: dict[str, Any] = {"errors": [{"message": m} for m in messages], "data": result.data}
        return json_response(out, status)
