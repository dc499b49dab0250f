"""Endpoint configuration: the admin API's wire and stored type.

Field names follow RunPod's REST v1 ``EndpointCreateInput`` where one exists
(reference/runpod_protocol.md §4.1).  Stored in etcd, so schema-evolution
rules apply: new fields get defaults, no field changes type.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "ApiKey",
    "ApiKeyCreate",
    "Endpoint",
    "EndpointSpec",
    "EndpointUpdate",
    "GpuCount",
    "KeyScope",
    "ScalerType",
]

GpuCount = Annotated[int, Meta(ge=1, le=8, description="whole GPUs per worker, 1-8")]
EndpointName = Annotated[str, Meta(min_length=1, max_length=191, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ScalerType = Literal["QUEUE_DELAY", "REQUEST_COUNT"]
Cpus = Annotated[float, Meta(ge=0, le=1024, description="CPU cores per worker (0 = unlimited)")]
MemoryMb = Annotated[int, Meta(ge=0, le=16 << 20, description="memory per worker in MiB (0 = unlimited)")]

ModelUrl = Annotated[
    str, Meta(max_length=2048, description="s3://bucket/prefix, file:///path or hf://org/name[@revision]")
]


class EndpointSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """What an operator or developer asks for.  Only ``name`` and ``image`` are required."""

    name: EndpointName
    image: Annotated[str, Meta(min_length=1)]  # "dir:///path" or an OCI reference
    command: list[str] = []
    args: list[str] = []
    env: dict[str, str] = {}
    # Ordered priority list: GPU types ("H100-80GB"), MIG profiles
    # ("H100-80GB:3g.40gb"), or memory classes ("mig-24gb").  Empty = any GPU.
    gpu_type_ids: list[str] = []
    gpu_count: GpuCount = 1
    workers_min: Annotated[int, Meta(ge=0, le=1000)] = 0
    workers_max: Annotated[int, Meta(ge=0, le=1000)] = 3
    idle_timeout: Annotated[int, Meta(ge=1, le=3600)] = 5  # seconds
    scaler_type: ScalerType = "QUEUE_DELAY"
    scaler_value: Annotated[int, Meta(ge=1, le=3600)] = 4
    flashboot: bool = True
    execution_timeout_ms: Annotated[int, Meta(ge=5_000, le=7 * 86_400_000)] = 600_000
    data_center_ids: list[str] = []
    network_volume_id: str = ""
    max_job_retries: Annotated[int, Meta(ge=0, le=100)] = 3  # Tide: requeues before FAILED
    concurrency_per_worker: Annotated[int, Meta(ge=1, le=1024)] = 1  # autoscaler's target
    # Tide: per-worker cgroup limits (containerd runtime); 0 = unlimited.
    cpus: Cpus = 0.0
    memory_mb: MemoryMb = 0
    # Tide: the weights the model cache stages for its workers ("" = none): s3://bucket/prefix,
    # file:///path or hf://org/name[@revision]; workers find them at $TIDE_MODEL_PATH.
    model: ModelUrl = ""
    # The RunPod template the image, command and env came from ("" = none; GraphQL API).
    template_id: str = ""


class EndpointUpdate(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """A partial update: every field optional; absent fields keep their value."""

    image: str | msgspec.UnsetType = msgspec.UNSET
    command: list[str] | msgspec.UnsetType = msgspec.UNSET
    args: list[str] | msgspec.UnsetType = msgspec.UNSET
    env: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    gpu_type_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    gpu_count: GpuCount | msgspec.UnsetType = msgspec.UNSET
    workers_min: Annotated[int, Meta(ge=0, le=1000)] | msgspec.UnsetType = msgspec.UNSET
    workers_max: Annotated[int, Meta(ge=0, le=1000)] | msgspec.UnsetType = msgspec.UNSET
    idle_timeout: Annotated[int, Meta(ge=1, le=3600)] | msgspec.UnsetType = msgspec.UNSET
    scaler_type: ScalerType | msgspec.UnsetType = msgspec.UNSET
    scaler_value: Annotated[int, Meta(ge=1, le=3600)] | msgspec.UnsetType = msgspec.UNSET
    flashboot: bool | msgspec.UnsetType = msgspec.UNSET
    execution_timeout_ms: Annotated[int, Meta(ge=5_000, le=7 * 86_400_000)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    data_center_ids: list[str] | msgspec.UnsetType = msgspec.UNSET
    network_volume_id: str | msgspec.UnsetType = msgspec.UNSET
    max_job_retries: Annotated[int, Meta(ge=0, le=100)] | msgspec.UnsetType = msgspec.UNSET
    concurrency_per_worker: Annotated[int, Meta(ge=1, le=1024)] | msgspec.UnsetType = msgspec.UNSET
    cpus: Cpus | msgspec.UnsetType = msgspec.UNSET
    memory_mb: MemoryMb | msgspec.UnsetType = msgspec.UNSET
    model: ModelUrl | msgspec.UnsetType = msgspec.UNSET
    template_id: str | msgspec.UnsetType = msgspec.UNSET


class Endpoint(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A stored endpoint: the spec plus identity.  ``version`` bumps on every update
    that changes what workers run (image, command, args, env, gpu fields)."""

    id: str
    spec: EndpointSpec
    created_at: float  # unix seconds
    version: int = 1


KeyScope = Literal["admin", "endpoints", "viewer", "node"]


class ApiKeyCreate(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    # endpoints: /v2 routes; admin: everything; viewer: read-only admin GETs and /metrics;
    # node: registers new GPU hosts (coordinator/api/_authz.py has the whole table)
    scope: KeyScope = "endpoints"
    endpoint_ids: list[str] = []  # with scope "endpoints": which ones ([] = all)


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A stored key: only the SHA-256 of the secret is kept."""

    id: str
    name: str
    scope: KeyScope
    endpoint_ids: list[str] = []
    sha256: str = ""
    created_at: float = 0.0
    revoked: bool = False
