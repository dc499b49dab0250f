"""The OpenAPI document is current: every route the live router serves is in the route table
(and nothing else is), the served ``/openapi.json`` is the generated one, and it is valid
OpenAPI 3.1.  (tests/e2e/test_openapi_fuzz.py checks the answers against it.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from openapi_spec_validator import validate

from coordinator.api._openapi import build_document
from coordinator.api._routes_table import ROUTES
from coordinator.store import MemoryStore
from tests.fixtures.coordinator import InProcessCoordinator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def coord(tmp_path: Path) -> AsyncIterator[InProcessCoordinator]:
    store = MemoryStore()
    async with InProcessCoordinator(store, state_dir=str(tmp_path), take_wait_s=0.2, stop_wait_s=0.2) as c:
        yield c
    await store.close()


def _served(c: InProcessCoordinator) -> set[tuple[str, str]]:
    """(method, path template) of every route of the running app; HEAD only where no GET is."""
    assert c.coordinator is not None and c.coordinator.app is not None
    found = set()
    for route in c.coordinator.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        assert path, f"route {route} has no path"
        found.add((route.method, path))
    return {(m, p) for m, p in found if m != "HEAD" or ("GET", p) not in found}


async def test_every_served_route_is_in_the_table_and_no_other(coord: InProcessCoordinator) -> None:
    served = _served(coord)
    listed = {(r.method, r.path) for r in ROUTES}
    assert not served - listed, f"served but not in coordinator/api/_routes_table.py: {served - listed}"
    assert not listed - served, f"in the route table but not served: {listed - served}"
    assert len(listed) == len(ROUTES), "a route is listed twice"


async def test_served_document_is_the_generated_one_and_valid_openapi_3_1(
    coord: InProcessCoordinator,
) -> None:
    async with aiohttp.ClientSession() as s, s.get(coord.url + "/openapi.json") as resp:  # no key
        assert resp.status == 200
        assert resp.content_type == "application/json"
        served: dict[str, Any] = msgspec.json.decode(await resp.read())
    assert served == msgspec.json.decode(msgspec.json.encode(build_document()))
    assert served["openapi"] == "3.1.0"
    validate(served)  # raises on an invalid document


def test_every_operation_has_a_unique_id_and_documents_its_errors_as_json() -> None:
    doc = build_document()
    ops = [op for item in doc["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    for op in ops:
        for status, answer in op["responses"].items():
            if int(status) >= 400 and op["operationId"] != "readyz":  # 503 {"ready": false, "error"}
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                # OpenAI-compatible routes answer OpenAI's error shape, as the openai SDKs expect;
                # /graphql GraphQL's, as the runpod SDK expects.
                shapes = {"openai": "OpenAIError", "graphql": "GraphQLErrors"}
                want = shapes.get(op["tags"][0], "ErrorBody")
                assert ref == f"#/components/schemas/{want}", (op["operationId"], status)
        keyless = op["operationId"] in (
            "healthz",
            "readyz",
            "openapi",
            "console",
            "consoleAsset",
        )  # /metrics: viewer
        assert ("security" in op) != keyless, op["operationId"]


def test_links_run_to_status_and_cancel_name_existing_operations() -> None:
    doc = build_document()
    ids = {op["operationId"] for item in doc["paths"].values() for op in item.values()}
    run = doc["paths"]["/v2/{ep}/run"]["post"]["responses"]["200"]
    assert {"getStatus", "postCancel"} <= set(run["links"])
    assert {link["operationId"] for link in run["links"].values()} <= ids
