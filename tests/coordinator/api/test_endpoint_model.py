"""An endpoint's ``model``: checked at the admin API (a 400 that shows the forms), kept with the
endpoint, a change is a new version (its workers are replaced), and older endpoints without it
still decode."""

from __future__ import annotations

import msgspec
import pytest

from coordinator.store import MemoryStore
from tests.fixtures.coordinator import InProcessCoordinator
from tide.api.endpoints import Endpoint


async def test_model_is_checked_kept_and_versioned() -> None:
    store = MemoryStore()
    async with InProcessCoordinator(store) as c:
        await c.admin.create_endpoint("ep", model="hf://acme/tiny@v1")
        got = await c.admin.call("GET", "/admin/v1/endpoints/ep")
        assert got["model"] == "hf://acme/tiny@v1" and got["version"] == 1
        got = await c.admin.call("PATCH", "/admin/v1/endpoints/ep", {"model": "s3://weights/tiny"})
        assert got["model"] == "s3://weights/tiny" and got["version"] == 2
        with pytest.raises(RuntimeError, match=r"400.*s3://bucket/prefix, file:///path or hf://"):
            await c.admin.create_endpoint("bad", model="ftp://example.com/m")
        with pytest.raises(RuntimeError, match="400"):
            await c.admin.call("PATCH", "/admin/v1/endpoints/ep", {"model": "hf://no-repo"})
    await store.close()


def test_a_stored_endpoint_without_model_still_decodes() -> None:
    old = b'{"id":"ep","spec":{"name":"ep","image":"img"},"createdAt":1.0,"version":3}'
    assert msgspec.json.decode(old, type=Endpoint).spec.model == ""
