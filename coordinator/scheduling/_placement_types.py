"""The placer's inputs and outputs, and the hook through which MIG re-cuts are proposed."""

from __future__ import annotations

from typing import Protocol, final

import msgspec

from coordinator.scheduling._gpu_types import GpuNeed
from tide.api.endpoints import EndpointSpec
from tide.api.nodes import GpuInfo, NodeInventory

__all__ = [
    "NO_RECUT",
    "Assignment",
    "ClusterSnapshot",
    "NoRecut",
    "NodeSnapshot",
    "PlacementPlan",
    "PlacementRequest",
    "SliceFitter",
    "SliceRecut",
]


class NodeSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One host as the leader read it.

    A whole GPU is free when its card is not MIG-enabled and its uuid is not in
    ``in_use``.  A MIG instance is free when it is not ``busy`` (noded saw no
    process on it) and its uuid is not in ``in_use`` (no worker is assigned to
    it, running or not).  Whole GPUs on MIG-enabled cards are never handed out:
    cards in the MIG pool stay MIG-enabled (DESIGN.md §2), a full card there is
    its 7g instance.
    """

    node_id: str
    inventory: NodeInventory
    revision: int = 0  # mod_revision of the node's record; the applier guards on it
    draining: bool = False
    lost: bool = False
    in_use: list[str] = []  # GPU and MIG uuids assigned to workers
    # Endpoint ids whose FlashBoot snapshot is held here (RAM or NVMe tier).
    # The caller maps inventory.flashboot_models to endpoints; the placer has no
    # model fingerprints.
    flashboot_endpoints: list[str] = []
    # Endpoint ids whose model (EndpointSpec.model) this host's model cache holds staged; the
    # caller maps inventory.models (model ids) to endpoints, as for FlashBoot.
    model_endpoints: list[str] = []
    # What the workers assigned here asked for: the sums of their endpoints' ``cpus`` and
    # ``memoryMb`` (0 = no ask).  The placer subtracts them, and its host reserve, from the
    # inventory's CPUs and memory (see _resources.py).
    requested_cpus: float = 0.0
    requested_memory_mb: int = 0


class ClusterSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    nodes: list[NodeSnapshot]
    revision: int = 0  # store revision the snapshot was read at


class PlacementRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Place these new workers (ids minted by the caller) for one endpoint."""

    endpoint_id: str
    spec: EndpointSpec
    worker_ids: list[str]


class Assignment(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    node_id: str
    gpu_type: str  # canonical type of the card(s), e.g. "H100-80GB"
    devices: list[str]  # GPU uuids (gpu_count of them) or one MIG uuid
    mig_profile: str = ""  # set when ``devices`` is a MIG instance
    price_key: str = ""  # metering key per device: "H100-80GB" or "H100-80GB:3g.40gb"


class SliceRecut(msgspec.Struct, frozen=True, kw_only=True):
    """A MIG card that could be re-cut to fit a waiting worker (the MIG planner decides)."""

    node_id: str
    gpu_uuid: str
    profile: str  # the profile the fitter would create
    endpoint_id: str
    worker_id: str


class PlacementPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What one placement pass decided.

    ``node_revisions`` holds the revision of every node the plan assigns to or
    re-cuts, so the applier can write the plan in one transaction guarded by
    them and re-plan on conflict.  A worker is in exactly one of
    ``assignments``, ``recuts`` and ``unplaced``.
    """

    assignments: list[Assignment] = []
    recuts: list[SliceRecut] = []
    unplaced: dict[str, list[str]] = {}  # endpoint id -> worker ids nothing fits
    reasons: dict[str, str] = {}  # endpoint id -> why its workers did not fit
    node_revisions: dict[str, int] = {}
    snapshot_revision: int = 0


class SliceFitter(Protocol):
    """Could an idle MIG-enabled card be re-cut so that a slice for ``need`` fits?

    Contract: pure and fast (the placer may call it once per candidate card per
    plan); it must not assume it will be acted on.  ``in_use`` names the MIG
    instances on the card that workers use or are assigned to; a re-cut may
    destroy only the others.  Return the profile to create (for a memory class,
    the one the fitter chose), or ``None`` when the card cannot fit it.
    """

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None: ...


@final
class NoRecut:
    """The default fitter: no card can be re-cut (until mig/ is wired in)."""

    def fit(self, *, gpu: GpuInfo, in_use: frozenset[str], need: GpuNeed) -> str | None:
        return None


NO_RECUT = NoRecut()
