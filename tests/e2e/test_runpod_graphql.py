"""RunPod's management API (``POST /graphql``) driven by the unmodified ``runpod`` SDK with
``RUNPOD_API_BASE_URL`` pointed at ``tide dev``: a template, an endpoint made from it, the
list, a job through ``runpod.Endpoint``, a template update, GPU types, a delete; and bad
input (unknown fields and operations, a wrong key, a viewer key's mutation, an unknown GPU
pool) answered as GraphQL errors that say what to fix.  One ``tide dev`` for the module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT, http_json

runpod = pytest.importorskip("runpod")
from runpod import error as runpod_error  # noqa: E402
from runpod.api.graphql import run_graphql_query  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"  # examples/echo/handler.py, unmodified


@pytest.fixture(scope="module")
def tide() -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(gpus="2xH100-80GB")
    saved = (os.environ.get("RUNPOD_API_BASE_URL"), runpod.api_key, runpod.endpoint_url_base)
    try:
        proc.start()
        os.environ["RUNPOD_API_BASE_URL"] = proc.url  # the SDK reads it on every call
        runpod.api_key = proc.api_key
        runpod.endpoint_url_base = f"{proc.url}/v2"
        yield proc
    finally:
        if saved[0] is None:
            os.environ.pop("RUNPOD_API_BASE_URL", None)
        else:
            os.environ["RUNPOD_API_BASE_URL"] = saved[0]
        runpod.api_key, runpod.endpoint_url_base = saved[1], saved[2]
        proc.cleanup()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _graphql(tide: DevClusterProcess, query: str, key: str | None = None) -> tuple[int, Any]:
    return http_json("POST", f"{tide.url}/graphql", {"query": query}, key=key or tide.api_key)


def test_template_endpoint_job_update_delete_with_the_sdk(tide: DevClusterProcess) -> None:
    template = runpod.create_template(_name("tpl"), ECHO, env={"GREETING": "hi"}, is_serverless=True)
    assert template["imageName"] == ECHO and template["env"] == [{"key": "GREETING", "value": "hi"}]
    name = _name("ep")
    made = runpod.create_endpoint(name, template["id"], gpu_ids="ADA_80_PRO,-NVIDIA H100 NVL", workers_max=1)
    assert made["id"] == name and made["templateId"] == template["id"]
    assert made["gpuIds"] == "ADA_80_PRO,-NVIDIA H100 NVL" and made["workersMax"] == 1
    assert made["flashBootType"] == "FLASHBOOT"  # Tide's default where the SDK sends none

    listed = {e["id"]: e for e in runpod.get_endpoints()}
    assert listed[name]["env"] == [{"key": "GREETING", "value": "hi"}]
    spec = tide.admin.call("GET", f"/admin/v1/endpoints/{name}")
    assert spec["image"] == ECHO and spec["gpuTypeIds"] == ["H100-80GB"]

    out = runpod.Endpoint(name).run_sync({"prompt": "hello"}, timeout=90)
    assert out is not None

    other = runpod.create_template(_name("tpl"), ECHO, docker_start_cmd="python -u handler.py")
    moved = runpod.update_endpoint_template(name, other["id"])
    assert moved == {"id": name, "templateId": other["id"]}
    assert tide.admin.call("GET", f"/admin/v1/endpoints/{name}")["command"] == ["python", "-u", "handler.py"]

    code, answer = _graphql(tide, f'mutation {{ deleteEndpoint(id: "{name}") }}')
    assert code == 200 and answer == {"data": {"deleteEndpoint": None}}
    assert name not in {e["id"] for e in runpod.get_endpoints()}


def test_gpu_types_come_from_the_gpu_type_table(tide: DevClusterProcess) -> None:
    gpus = {g["id"]: g for g in runpod.get_gpus()}
    assert gpus["NVIDIA H100 80GB HBM3"] == {
        "id": "NVIDIA H100 80GB HBM3",
        "displayName": "H100 SXM",
        "memoryInGb": 80,
    }
    one = runpod.get_gpu("NVIDIA H200", 2)
    assert one["memoryInGb"] == 141 and "lowestPrice" in one
    with pytest.raises(ValueError, match="No GPU found"):
        runpod.get_gpu("NVIDIA GeForce GTX 690")


def test_an_unknown_gpu_pool_names_the_pools(tide: DevClusterProcess) -> None:
    template = runpod.create_template(_name("tpl"), ECHO)
    with pytest.raises(runpod_error.QueryError, match=r"unknown GPU pool 'AMPERE_12'.*AMPERE_16"):
        runpod.create_endpoint(_name("ep"), template["id"], gpu_ids="AMPERE_12")
    with pytest.raises(runpod_error.QueryError, match="template 'nope' not found"):
        runpod.create_endpoint(_name("ep"), "nope")
    with pytest.raises(runpod_error.QueryError, match="workersMin"):
        runpod.create_endpoint(_name("ep"), template["id"], workers_min=5, workers_max=1)


def test_unknown_fields_and_operations_are_graphql_errors(tide: DevClusterProcess) -> None:
    code, answer = _graphql(tide, "query { myself { endpoints { id colour } } }")
    message = answer["errors"][0]["message"].replace('"', "'")
    assert code == 400 and "Cannot query field 'colour' on type 'Endpoint'" in message
    code, answer = _graphql(tide, 'mutation { podStop(input: {podId: "x"}) { id } }')
    assert code == 400 and "not supported by Tide" in answer["errors"][0]["message"]
    assert "saveEndpoint" in answer["errors"][0]["message"]
    code, answer = _graphql(tide, "query { myself { endpoints { id }")
    assert code == 400 and answer["errors"][0]["message"].startswith("GraphQL syntax error")
    code, answer = http_json("POST", f"{tide.url}/graphql", {"query": 3}, key=tide.api_key)
    assert code == 400 and "errors" in answer


def test_keys_wrong_key_and_viewer_scope(tide: DevClusterProcess) -> None:
    with pytest.raises(runpod_error.AuthenticationError):
        runpod.get_gpus(api_key="not-a-key")
    viewer = str(tide.admin.create_key(_name("view"), scope="viewer")["key"])
    assert runpod.get_gpus(api_key=viewer)  # queries: a viewer key is enough
    with pytest.raises(runpod_error.QueryError, match="needs an admin key"):
        run_graphql_query('mutation { deleteEndpoint(id: "x") }', api_key=viewer)
    client = str(tide.admin.create_key(_name("cli"))["key"])
    code, answer = _graphql(tide, "query { gpuTypes { id } }", key=client)
    assert code == 403 and "viewer or admin" in answer["errors"][0]["message"]
