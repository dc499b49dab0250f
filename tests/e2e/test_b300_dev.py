"""``tide dev --gpus 8xB300-288GB``: a simulated 8 x B300 host serves one 8-GPU worker that an endpoint
asked for by its RunPod id, and the worker sees all eight cards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HANDLERS = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers'}"


@pytest.fixture
def b300_host() -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(nodes=1, gpus="8xB300-288GB")  # the marketing size aliases B300-269GB
    try:
        proc.start()
        yield proc
    finally:
        proc.cleanup()


def test_one_worker_gets_all_eight_b300s(b300_host: DevClusterProcess) -> None:
    import runpod

    admin = b300_host.admin
    [node] = admin.call("GET", "/admin/v1/nodes")
    gpus = node["inventory"]["gpus"]
    assert [g["typeId"] for g in gpus] == ["B300-269GB"] * 8
    assert {g["name"] for g in gpus} == {"NVIDIA B300 SXM6 AC"}

    body = {
        "name": "big",
        "image": HANDLERS,
        "command": ["python", "-u", "visible_devices.py"],
        "gpuTypeIds": ["NVIDIA B300 SXM6 AC"],
        "gpuCount": 8,
        "workersMin": 0,
        "workersMax": 1,
        "idleTimeout": 2,
    }
    admin.call("POST", "/admin/v1/endpoints", body)
    key = str(admin.create_key("client-b300")["key"])
    runpod.endpoint_url_base = b300_host.url + "/v2"
    out = runpod.Endpoint("big", api_key=key).run_sync({"sleep": 0}, timeout=60)
    assert sorted(out["cuda"].split(",")) == sorted(g["uuid"] for g in gpus)
