"""Object-store throughput: put/get of one large object to a local SeaweedFS (S3 over
loopback, through obstore) against the local-directory backend and a plain disk copy,
measured in the same run.  Prints figures; asserts nothing.

    python -m bench.blobs --mib 256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.fixtures.seaweedfs import SeaweedFS
from tiered_storage import ObjectStore, open_object_store

_CHUNK = 8 << 20


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), _CHUNK):
        yield data[i : i + _CHUNK]


async def _measure(name: str, objects: ObjectStore, data: bytes) -> None:
    mib = len(data) / (1 << 20)
    t = time.perf_counter()
    await objects.put_stream("bench/big", _chunks(data))
    put_s = time.perf_counter() - t
    t = time.perf_counter()
    got = 0
    async for chunk in objects.get_stream("bench/big"):
        got += len(chunk)
    get_s = time.perf_counter() - t
    assert got == len(data)
    print(f"{name:<28} put {mib / put_s:8.0f} MiB/s   get {mib / get_s:8.0f} MiB/s")
    await objects.delete("bench/big")


def _disk_copy(data: bytes, root: Path) -> None:
    mib = len(data) / (1 << 20)
    src, dst = root / "src", root / "dst"
    src.write_bytes(data)
    os.sync()
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    print(f"{'disk copy (cp + fsync)':<28} {mib / (time.perf_counter() - t):8.0f} MiB/s")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    data = os.urandom(args.mib << 20)
    root = Path(tempfile.mkdtemp(prefix="tide-bench-blobs-"))
    server = SeaweedFS(buckets=("bench",))
    server.start()
    try:
        print(f"{args.mib} MiB, one object, streamed in {_CHUNK >> 20} MiB chunks")
        _disk_copy(data, root)
        await _measure("local directory backend", open_object_store((root / "objects").as_uri()), data)
        s3 = open_object_store(
            "s3://bench", endpoint_url=server.s3_url, credentials_file=str(server.credentials_file())
        )
        await _measure("S3 (SeaweedFS, loopback)", s3, data)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
