"""Blobs every replica sees: two coordinator processes on one etcd share a SeaweedFS
bucket ([blobs] url), so a large input submitted through one replica is taken
through the other, and the large result is read back through the first.  With the
object store down, a large /run is a clear 503 and an accepted job is not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.coordinator import CoordinatorProcess, RunpodWorker, http_json, wait_until
from tests.fixtures.etcd import ETCD_MISSING, EtcdServer, etcd_binary
from tests.fixtures.seaweedfs import SEAWEEDFS_MISSING, SeaweedFS, weed_binary
from tiered_storage import open_object_store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(etcd_binary() is None, reason=ETCD_MISSING),
    pytest.mark.skipif(weed_binary() is None, reason=SEAWEEDFS_MISSING),
]

BIG = {"text": "é" * 200_000}  # ~400 KiB of JSON: over the 256 KiB inline limit


def _blobs_toml(server: SeaweedFS, prefix: str) -> str:
    return (
        f'\n[blobs]\nurl = "s3://tide/{prefix}"\nendpoint-url = "{server.s3_url}"\n'
        f'credentials-file = "{server.credentials_file()}"\n'
    )


def _pair(etcd: EtcdServer, server: SeaweedFS, prefix: str) -> tuple[CoordinatorProcess, CoordinatorProcess]:
    a = CoordinatorProcess(store_url=etcd.url, take_wait_s=2.0, extra_config=_blobs_toml(server, prefix))
    b = CoordinatorProcess(
        store_url=etcd.url,
        take_wait_s=2.0,
        token_secret_file=a.token_secret_file,
        extra_config=_blobs_toml(server, prefix),
    )
    b.admin_key = a.admin_key  # one cluster: both replicas trust the same admin key
    b.config_path.write_text(
        b.config_path.read_text().replace(str(b.root / "admin.key"), str(a.root / "admin.key"))
    )
    a.start()
    b.start()
    return a, b


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


def _run(c: CoordinatorProcess, ep: str, body: Any, key: str) -> tuple[int, Any]:
    return http_json("POST", f"{c.url}/v2/{ep}/run", {"input": body}, key=key)


def _final(c: CoordinatorProcess, ep: str, job: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(http_json("GET", f"{c.url}/v2/{ep}/status/{job}", key=key)[1])
        return seen.get("status") in ("COMPLETED", "FAILED")

    wait_until(done, timeout=60.0)
    return seen


def test_large_input_through_a_taken_through_b_result_read_through_a(
    etcd: EtcdServer, seaweedfs: SeaweedFS
) -> None:
    a, b = _pair(etcd, seaweedfs, "replicas")
    worker = None
    try:
        ep = a.admin.create_endpoint("blobs-shared")
        worker = RunpodWorker(b.url, ep, "w1", a.admin.worker_token(ep, "w1"), "echo.py").start()
        code, submitted = _run(a, ep, BIG, a.admin_key)
        assert code == 200, submitted
        final = _final(a, ep, submitted["id"], a.admin_key)
        assert final["status"] == "COMPLETED" and final["output"] == {"echo": BIG}
        objects = open_object_store(
            "s3://tide/replicas",
            endpoint_url=seaweedfs.s3_url,
            credentials_file=str(seaweedfs.credentials_file()),
        )
        keys = asyncio.run(_keys(objects, f"jobs/{ep}/{submitted['id']}"))
        assert keys == [f"jobs/{ep}/{submitted['id']}/input", f"jobs/{ep}/{submitted['id']}/output"]
    finally:
        if worker is not None:
            worker.stop()
        b.stop()
        a.stop()


async def _keys(objects: Any, prefix: str) -> list[str]:
    return sorted([m.key async for m in objects.list(prefix)])


def test_object_store_down_large_run_is_503_and_accepted_jobs_survive(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    server = SeaweedFS(buckets=("tide",))  # its own: this test takes it down
    server.start()
    a, b = _pair(etcd, server, "outage")
    worker = None
    try:
        ep = a.admin.create_endpoint("blobs-outage")
        code, accepted = _run(a, ep, BIG, a.admin_key)
        assert code == 200, accepted
        server.kill()
        code, refused = _run(a, ep, BIG, a.admin_key)
        assert code == 503 and "object store" in refused["error"], refused
        assert _run(a, ep, {"small": 1}, a.admin_key)[0] == 200  # inline jobs go on
        worker = RunpodWorker(b.url, ep, "w1", a.admin.worker_token(ep, "w1"), "echo.py").start()
        status = http_json("GET", f"{a.url}/v2/{ep}/status/{accepted['id']}", key=a.admin_key)[1]
        assert status["status"] == "IN_QUEUE"  # not taken while its input cannot be read
        server.start()
        final = _final(a, ep, accepted["id"], a.admin_key)
        assert final["status"] == "COMPLETED" and final["output"] == {"echo": BIG}
    finally:
        if worker is not None:
            worker.stop()
        b.stop()
        a.stop()
        server.stop()
