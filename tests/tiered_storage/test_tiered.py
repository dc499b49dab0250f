"""Read-through between two regions' stores: two real SeaweedFS servers, one the region's, one
global.  Fault cases start a throwaway server of their own and kill it."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fixtures.seaweedfs import SEAWEEDFS_MISSING, SeaweedFS, s3_store, weed_binary
from tide.api.errors import NotFound, Unavailable
from tiered_storage import ObjectStore, TieredStore

pytestmark = pytest.mark.integration


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def prefix() -> str:
    return f"tiered-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def region(seaweedfs_region: SeaweedFS, prefix: str) -> ObjectStore:
    return s3_store(seaweedfs_region, prefix)


@pytest.fixture
def global_(seaweedfs: SeaweedFS, prefix: str) -> ObjectStore:
    return s3_store(seaweedfs, prefix)


@pytest.fixture
def throwaway() -> Iterator[SeaweedFS]:
    """A server of this test's own, to kill."""
    if weed_binary() is None:
        pytest.skip(SEAWEEDFS_MISSING)
    server = SeaweedFS()
    server.start()
    yield server
    server.stop()


async def test_a_miss_fills_the_region_from_global(region: ObjectStore, global_: ObjectStore) -> None:
    tiered = TieredStore(region, global_)
    await global_.put("models/m1/manifest.json", b"weights")
    got = await tiered.fetch("models/m1/manifest.json", sha256=_sha(b"weights"))
    assert (got.tier, got.data) == ("global", b"weights")
    assert await region.get("models/m1/manifest.json") == b"weights"  # filled
    again = await tiered.fetch("models/m1/manifest.json", sha256=_sha(b"weights"))
    assert (again.tier, again.data) == ("region", b"weights")
    assert await tiered.get("models/m1/manifest.json") == b"weights"


async def test_a_corrupt_region_copy_is_dropped_and_fetched_again(
    region: ObjectStore, global_: ObjectStore
) -> None:
    tiered = TieredStore(region, global_)
    await global_.put("models/m2/a", b"good bytes")
    await region.put("models/m2/a", b"bit rot!!!")
    got = await tiered.fetch("models/m2/a", sha256=_sha(b"good bytes"))
    assert (got.tier, got.data) == ("global", b"good bytes")
    assert await region.get("models/m2/a") == b"good bytes"


async def test_a_corrupt_global_copy_is_an_error_and_fills_nothing(
    region: ObjectStore, global_: ObjectStore
) -> None:
    tiered = TieredStore(region, global_)
    await global_.put("models/m3/a", b"tampered")
    with pytest.raises(Unavailable, match="checksum"):
        await tiered.fetch("models/m3/a", sha256=_sha(b"original"))
    with pytest.raises(NotFound):
        await region.get("models/m3/a")


async def test_absent_everywhere_is_not_found(region: ObjectStore, global_: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await TieredStore(region, global_).fetch("models/none/a")
    with pytest.raises(NotFound):
        await TieredStore(region).fetch("models/none/a")  # no global tier: the region decides


async def test_large_objects_stream_to_a_file_and_fill(
    region: ObjectStore, global_: ObjectStore, tmp_path: Path
) -> None:
    data = os.urandom(20 << 20)  # several multipart parts

    async def parts() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 5 << 20):
            yield data[i : i + (5 << 20)]

    tiered = TieredStore(region, global_)
    await tiered.put_stream("models/big/w.safetensors", parts())  # writes global only
    dest = tmp_path / "w.safetensors"
    got = await tiered.fetch_to_file("models/big/w.safetensors", dest, sha256=_sha(data))
    assert (got.tier, got.size, got.sha256) == ("global", len(data), _sha(data))
    assert dest.read_bytes() == data
    assert (await region.head("models/big/w.safetensors")).size == len(data)
    dest.unlink()
    again = await tiered.fetch_to_file("models/big/w.safetensors", dest, sha256=_sha(data))
    assert again.tier == "region" and dest.read_bytes() == data
    with pytest.raises(Unavailable, match="checksum"):  # wrong digest: dest untouched, no part file
        await tiered.fetch_to_file("models/big/w.safetensors", tmp_path / "x", sha256=_sha(b""))
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


async def test_writes_go_to_global_and_the_region(region: ObjectStore, global_: ObjectStore) -> None:
    tiered = TieredStore(region, global_)
    await tiered.put("models/w/a", b"x")
    assert await global_.get("models/w/a") == b"x" and await region.get("models/w/a") == b"x"
    assert [m.key async for m in tiered.list("models/w")] == ["models/w/a"]
    await tiered.delete("models/w/a")
    for store in (region, global_):
        with pytest.raises(NotFound):
            await store.get("models/w/a")


async def test_region_down_reads_from_global(throwaway: SeaweedFS, global_: ObjectStore, prefix: str) -> None:
    region = s3_store(throwaway, prefix)
    await global_.put("models/rd/a", b"from global")
    throwaway.kill()
    tiered = TieredStore(region, global_)
    got = await tiered.fetch("models/rd/a", sha256=_sha(b"from global"))
    assert (got.tier, got.data) == ("global", b"from global")
    await tiered.put("models/rd/b", b"written while the region is down")  # global took it
    assert await global_.get("models/rd/b") == b"written while the region is down"
    with pytest.raises(NotFound):
        await tiered.fetch("models/rd/none")  # global is up: its miss is authoritative


async def test_global_down_serves_what_the_region_holds(
    throwaway: SeaweedFS, region: ObjectStore, prefix: str
) -> None:
    global_ = s3_store(throwaway, prefix)
    tiered = TieredStore(region, global_)
    await global_.put("models/gd/a", b"replicated")
    assert (await tiered.fetch("models/gd/a")).tier == "global"  # now held by the region
    throwaway.kill()
    got = await tiered.fetch("models/gd/a", sha256=_sha(b"replicated"))
    assert (got.tier, got.data) == ("region", b"replicated")
    assert [m.key async for m in tiered.list("models/gd")] == ["models/gd/a"]  # the region's listing
    with pytest.raises(Unavailable, match="unavailable"):
        await tiered.fetch("models/gd/never-replicated")  # not NotFound: global could not say
    with pytest.raises(Unavailable):
        await tiered.put("models/gd/b", b"x")  # global is the source of truth for writes
