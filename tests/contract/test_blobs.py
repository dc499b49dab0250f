"""The object-store contract: every backend (a local directory, S3 on a real
SeaweedFS) passes the same cases."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.seaweedfs import SeaweedFS
from tide.api.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from tiered_storage import ObjectStore, object_key, open_object_store


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_object_store((tmp_path / "objects").as_uri())
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    return open_object_store(
        f"s3://tide/contract-{uuid.uuid4().hex[:8]}",
        endpoint_url=server.s3_url,
        credentials_file=str(server.credentials_file()),
    )


async def _keys(objects: ObjectStore, prefix: str) -> list[str]:
    return sorted([m.key async for m in objects.list(prefix)])


async def test_put_get_head_delete(objects: ObjectStore) -> None:
    meta = await objects.put("jobs/ep/j1/input", b"hello")
    assert meta.key == "jobs/ep/j1/input" and meta.size == 5
    assert await objects.get("jobs/ep/j1/input") == b"hello"
    head = await objects.head("jobs/ep/j1/input")
    assert head.size == 5 and head.etag and head.modified > 0
    await objects.put("jobs/ep/j1/input", b"bye")  # overwrite
    assert await objects.get("jobs/ep/j1/input") == b"bye"
    await objects.delete("jobs/ep/j1/input")
    await objects.delete("jobs/ep/j1/input")  # absent: no error
    with pytest.raises(NotFound):
        await objects.get("jobs/ep/j1/input")


async def test_not_found_is_the_taxonomy(objects: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await objects.get("jobs/none/none/input")
    with pytest.raises(NotFound):
        await objects.head("jobs/none/none/input")
    with pytest.raises(NotFound):
        async for _ in objects.get_stream("jobs/none/none/input"):
            pass


async def test_list_by_prefix_is_by_folder(objects: ObjectStore) -> None:
    for key in ("jobs/a/1/input", "jobs/a/1/output", "jobs/ab/2/input", "batches/a/shard-0"):
        await objects.put(key, b"x")
    assert await _keys(objects, "jobs/a") == ["jobs/a/1/input", "jobs/a/1/output"]
    assert await _keys(objects, "jobs/a/") == ["jobs/a/1/input", "jobs/a/1/output"]
    assert await _keys(objects, "jobs/") == ["jobs/a/1/input", "jobs/a/1/output", "jobs/ab/2/input"]
    assert await _keys(objects, "") == [
        "batches/a/shard-0",
        "jobs/a/1/input",
        "jobs/a/1/output",
        "jobs/ab/2/input",
    ]
    assert await _keys(objects, "volumes/") == []
    sizes = {m.key: m.size async for m in objects.list("jobs/a")}
    assert sizes == {"jobs/a/1/input": 1, "jobs/a/1/output": 1}


async def test_streaming_a_large_object(objects: ObjectStore) -> None:
    part = os.urandom(1 << 20)
    total = 20  # 20 MiB: several multipart parts on S3

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(total):
            yield bytes([i]) + part[1:]

    meta = await objects.put_stream("bundles/big", chunks())
    assert meta.size == total << 20
    assert (await objects.head("bundles/big")).size == total << 20
    got = bytearray()
    async for chunk in objects.get_stream("bundles/big", chunk_size=4 << 20):
        got += chunk
    assert len(got) == total << 20
    assert all(got[i << 20] == i for i in range(total)) and got[1 : 1 << 20] == part[1:]
    assert await objects.get("bundles/big") == bytes(got)


async def test_if_absent_puts_once(objects: ObjectStore) -> None:
    await objects.put("bundles/b1", b"first", if_absent=True)
    with pytest.raises(AlreadyExists):
        await objects.put("bundles/b1", b"second", if_absent=True)
    assert await objects.get("bundles/b1") == b"first"


async def test_concurrent_creators_one_wins(objects: ObjectStore) -> None:
    results = await asyncio.gather(
        *(objects.put("bundles/race", f"writer-{i}".encode(), if_absent=True) for i in range(8)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))
    assert (await objects.get("bundles/race")).startswith(b"writer-")


async def test_concurrent_writers_leave_one_whole_value(objects: ObjectStore) -> None:
    values = [bytes([i]) * (256 << 10) for i in range(8)]
    await asyncio.gather(*(objects.put("jobs/ep/j/output", v) for v in values))
    assert await objects.get("jobs/ep/j/output") in values  # one writer's whole value, never a mix


async def test_bad_keys_are_refused(objects: ObjectStore) -> None:
    for key in ("", "/abs", "a//b", "a/../b", "a/./b", "x\x00"):
        with pytest.raises(InvalidArgument):
            await objects.put(key, b"x")
    with pytest.raises(InvalidArgument):
        object_key("secrets", "x")
    assert object_key("jobs", "ep", "j1", "input") == "jobs/ep/j1/input"


@pytest.mark.integration
async def test_wrong_credentials_are_unavailable(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    creds = tmp_path / "creds.env"
    creds.write_text(f"AWS_ACCESS_KEY_ID={seaweedfs.access_key}\nAWS_SECRET_ACCESS_KEY=wrong\n")
    objects = open_object_store("s3://tide/x", endpoint_url=seaweedfs.s3_url, credentials_file=str(creds))
    with pytest.raises(Unavailable, match="refused our credentials") as info:
        await objects.put("jobs/a/b/input", b"x")
    assert "wrong" not in info.value.message


async def test_a_store_that_is_down_is_unavailable(tmp_path: Path) -> None:
    from tests.fixtures.etcd import free_port

    creds = tmp_path / "creds.env"
    creds.write_text("AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n")
    url = f"http://127.0.0.1:{free_port()}"
    objects = open_object_store("s3://tide", endpoint_url=url, credentials_file=str(creds))
    with pytest.raises(Unavailable, match="is unavailable"):
        await objects.get("jobs/a/b/input")
