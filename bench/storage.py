"""Model cache throughput: region store -> host tier fetch (a real SeaweedFS over loopback, the
model cache's own path: streamed, sha256-checked, written to the host's cache directory and
synced) against the two rooflines it cannot beat, measured in the same run: the disk (write the
same bytes + fsync) and loopback TCP (the same bytes through one socket).  Also a second host's
model staging with the model already in the region store against reading it from its source
(file:// on this machine's disk: the fastest source there is; a real s3:// or hf:// source is
slower), p50 over --reps.  Prints figures; asserts nothing.

    python -m bench.storage --mib 1024 --files 4 --reps 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.fixtures.seaweedfs import SeaweedFS
from tiered_storage import ModelCache, TieredStore, open_object_store, parse_model_ref

_CHUNK = 8 << 20


def _disk_roofline(root: Path, nbytes: int, files: int) -> float:
    """Write the model's bytes as the fetch does (same files, same chunks), then sync."""
    block = os.urandom(_CHUNK)
    t = time.perf_counter()
    for i in range(files):
        with open(root / f"disk-roofline-{i}", "wb") as f:
            for _ in range(nbytes // files // _CHUNK):
                f.write(block)
    os.sync()
    s = time.perf_counter() - t
    for i in range(files):
        (root / f"disk-roofline-{i}").unlink()
    return nbytes / s


def _loopback_roofline(nbytes: int) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    block = os.urandom(_CHUNK)

    def send() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(nbytes // _CHUNK):
                conn.sendall(block)

    thread = threading.Thread(target=send)
    thread.start()
    buf = bytearray(_CHUNK)
    got = 0
    with socket.create_connection(("127.0.0.1", port)) as c:
        t = time.perf_counter()
        while got < nbytes:
            n = c.recv_into(buf)
            if not n:
                break
            got += n
        s = time.perf_counter() - t
    thread.join()
    server.close()
    return got / s


def _make_model(root: Path, nbytes: int, files: int) -> Path:
    src = root / "source-model"
    src.mkdir()
    per = nbytes // files
    for i in range(files):
        with open(src / f"model-{i:05d}-of-{files:05d}.safetensors", "wb") as f:
            for _ in range(per // _CHUNK):
                f.write(os.urandom(_CHUNK))
    return src


async def _stage(cache_dir: Path, store: TieredStore | None, url: str) -> tuple[str, float, int]:
    cache = ModelCache(cache_dir, budget_bytes=1 << 40, store=store)
    t = time.perf_counter()
    staged = await cache.ensure(parse_model_ref(url))
    os.sync()  # the bytes are on the host's disk, as the disk roofline's are
    return staged.tier, time.perf_counter() - t, staged.nbytes


async def run(args: argparse.Namespace) -> None:
    nbytes = (args.mib << 20) // (_CHUNK * args.files) * (_CHUNK * args.files)
    root = Path(tempfile.mkdtemp(prefix="tide-bench-storage-"))
    server = SeaweedFS(buckets=("bench",))
    server.start()
    try:
        creds = str(server.credentials_file())
        region = open_object_store("s3://bench/region", endpoint_url=server.s3_url, credentials_file=creds)
        store = TieredStore(region)
        url = _make_model(root, nbytes, args.files).as_uri()
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
        )
        print(f"model: {nbytes >> 20} MiB in {args.files} files; region store: SeaweedFS on loopback")
        tier, secs, _ = await _stage(root / "host-a", store, url)  # source -> host A + region
        assert tier == "source"
        region_s, source_s, disks, loops = [], [], [], []
        for i in range(args.reps):  # interleaved, so a busy moment hits every figure alike
            disks.append(_disk_roofline(root, nbytes, args.files))
            loops.append(_loopback_roofline(nbytes))
            tier, secs, _ = await _stage(root / f"host-r{i}", store, url)
            assert tier == "region", tier
            region_s.append(secs)
            tier, secs, _ = await _stage(root / f"host-s{i}", None, url)
            assert tier == "source", tier
            source_s.append(secs)
            shutil.rmtree(root / f"host-r{i}")
            shutil.rmtree(root / f"host-s{i}")
        mib = nbytes / (1 << 20)
        disk, loop = statistics.median(disks), statistics.median(loops)
        fetch = nbytes / statistics.median(region_s)
        slower = min(disk, loop)
        print(f"disk roofline (write + sync, p50)  {disk / (1 << 20):8.0f} MiB/s")
        print(f"loopback TCP roofline (p50)        {loop / (1 << 20):8.0f} MiB/s")
        print(f"region -> host fetch (p50)         {fetch / (1 << 20):8.0f} MiB/s")
        print(f"ratio to the slower roofline       {fetch / slower:8.2f}  (target >= 0.80)")
        print(
            f"second host staging, model in region   p50 {statistics.median(region_s):6.2f} s ({mib:.0f} MiB)"
        )
        print(
            f"second host staging, from source      p50 {statistics.median(source_s):6.2f} s"
            " (file://, local disk)"
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="model size (default 1 GiB)")
    ap.add_argument("--files", type=int, default=4, help="files the model is split into")
    ap.add_argument("--reps", type=int, default=3)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
