"""The shapes of the coordinator's JSON answers on the admin (/admin/v1) and node (/node/v1)
routes, for the generated OpenAPI document (see tide/api/responses.py for why they are
Structs that describe dicts)."""

from __future__ import annotations

from typing import Literal

import msgspec

from tide.api.endpoints import EndpointSpec, KeyScope
from tide.api.responses import ColdStartReport, EndpointHealth

__all__ = [
    "CapacityRow",
    "ClusterStatus",
    "Deleted",
    "DrainAnswer",
    "EndpointDescribed",
    "EndpointOut",
    "HeartbeatAnswer",
    "JobList",
    "JobRow",
    "KeyCreated",
    "KeyOut",
    "MigCard",
    "MigCatalogOut",
    "MigForgotten",
    "MigInstanceOut",
    "MigPlan",
    "MigSlot",
    "NodeForgotten",
    "NodeRegistered",
    "UsageReport",
    "UsageRow",
    "WorkerLogs",
    "WorkerRow",
    "WorkerToken",
]


class _Answer(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    pass


class EndpointOut(EndpointSpec, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """An endpoint as created or updated: its spec, every field present, plus identity."""

    id: str
    created_at: float
    version: int


class EndpointDescribed(EndpointOut, frozen=True, kw_only=True):
    """An endpoint as listed or shown: also its health and why its workers wait."""

    health: EndpointHealth
    placement: str
    last_cold_start: ColdStartReport | None


class Deleted(_Answer, frozen=True, kw_only=True):
    id: str
    deleted: bool


class WorkerToken(_Answer, frozen=True, kw_only=True):
    endpoint_id: str
    worker_id: str
    token: str
    expires_at: int  # unix seconds; a hand-started worker's token expires (ttl_s)


class JobRow(_Answer, frozen=True, kw_only=True):
    id: str
    status: str
    created_at: float
    worker_id: str
    retries: int


class JobList(_Answer, frozen=True, kw_only=True):
    endpoint_id: str
    health: EndpointHealth
    jobs: list[JobRow]  # queued and running first (oldest first), then the latest finished


class KeyOut(_Answer, frozen=True, kw_only=True):
    """An API key as listed: never its secret, nor the secret's hash."""

    id: str
    name: str
    scope: KeyScope  # one source: the stored key's scopes
    endpoint_ids: list[str]
    created_at: float
    revoked: bool


class KeyCreated(KeyOut, frozen=True, kw_only=True):
    key: str  # the secret, shown this once


class NodeRegistered(_Answer, frozen=True, kw_only=True):
    node_id: str
    token: str  # the node's own credential for heartbeat and desired


class HeartbeatAnswer(_Answer, frozen=True, kw_only=True):
    ok: bool
    draining: bool


class DrainAnswer(_Answer, frozen=True, kw_only=True):
    id: str
    draining: bool


class NodeForgotten(_Answer, frozen=True, kw_only=True):
    id: str
    forgotten: bool


class WorkerRow(_Answer, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    node_id: str
    gpu_type: str
    devices: list[str]
    state: str
    reason: str
    restarts: int
    started_at: float
    ready_at: float
    cold_start: ColdStartReport | None
    ram_bytes: int  # host RAM it holds while suspended (0 otherwise)
    suspended_at: float  # when it was suspended (0.0: it is not)


class WorkerLogs(_Answer, frozen=True, kw_only=True):
    """Relayed from the worker's noded; its errors are relayed with their status."""

    worker_id: str
    lines: list[str]


class UsageRow(_Answer, frozen=True, kw_only=True):
    endpoint_id: str
    gpu_type: str  # the price key: a GPU type, or "TYPE:PROFILE" for a MIG slice
    gpu_seconds: float
    cost: float


class UsageReport(_Answer, frozen=True, kw_only=True):
    rows: list[UsageRow]
    total_gpu_seconds: float
    total_cost: float
    currency: Literal["USD"]


class _NodeCounts(_Answer, frozen=True, kw_only=True):
    total: int
    lost: int


class _WorkerCounts(_Answer, frozen=True, kw_only=True):
    total: int


class CapacityRow(_Answer, frozen=True, kw_only=True):
    gpu_type: str
    region: str
    total: int
    free: int


class ClusterStatus(_Answer, frozen=True, kw_only=True):
    endpoints: int
    queued: int
    running: int
    nodes: _NodeCounts
    workers: _WorkerCounts
    capacity: list[CapacityRow]


class MigSlot(_Answer, frozen=True, kw_only=True):
    profile: str
    start: int
    size: int


class MigInstanceOut(MigSlot, frozen=True, kw_only=True):
    uuid: str
    busy: bool


class _MigIdentity(_Answer, frozen=True, kw_only=True):
    node_id: str
    gpu: str  # the card's uuid
    index: int
    type_id: str
    grid: int
    mig_enabled: bool


class MigPlan(_MigIdentity, frozen=True, kw_only=True):
    layout: list[MigSlot]
    destroy: list[MigSlot]
    create: list[MigSlot]
    dry_run: bool
    applied: bool


class MigCard(_MigIdentity, frozen=True, kw_only=True):
    instances: list[MigInstanceOut]
    wanted: list[str] | None  # the stored layout's profiles; null: none stored
    source: str
    written_at: float
    state: str
    error: str


class _MigProfileOut(_Answer, frozen=True, kw_only=True):
    name: str
    size: int  # memory units on the card's grid
    memory_mb: int
    compute_slices: int


class MigCatalogOut(_Answer, frozen=True, kw_only=True):
    """A MIG-capable GPU type: its memory-unit grid (how a card's slices are drawn) and profiles."""

    type_id: str
    grid: int
    compute_slices: int
    memory_mb: int
    profiles: list[_MigProfileOut]


class MigForgotten(_Answer, frozen=True, kw_only=True):
    node_id: str
    gpu: str
    forgotten: bool
