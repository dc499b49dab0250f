"""The placer's view of one snapshot: free capacity, consumed as a plan is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from coordinator.scheduling._capacity import Pool
from coordinator.scheduling._gpu_types import (
    ANY_GPU,
    GpuNeed,
    canonical_gpu_type,
    parse_gpu_type_id,
    profile_memory_gb,
)
from coordinator.scheduling._placement_types import ClusterSnapshot, NodeSnapshot, PlacementRequest
from coordinator.scheduling._resources import DEFAULT_HOST_RESERVE, Ask, HostReserve, Room, ask_of, host_room
from tide.api.nodes import GpuInfo

__all__ = ["Index", "Tiers", "Want", "gpu_pools", "mig_pool_groups"]

Tiers = list[tuple[str, list[str]]]  # (view name, hosts) in preference order


class Index:
    """Free capacity of one snapshot, consumed as the plan is built."""

    def __init__(self, snapshot: ClusterSnapshot, reserve: HostReserve = DEFAULT_HOST_RESERVE) -> None:
        self.reserve = reserve  # what each host keeps back from workers' CPU/RAM asks
        self.gpu_pools: dict[str, Pool] = {}
        self.mig_pools: dict[str, Pool] = {}  # "type:profile" -> pool
        self.mig_memory: dict[str, int] = {}  # "type:profile" -> GB
        self.mig_cards: dict[str, list[tuple[str, GpuInfo]]] = {}  # type -> (node, card)
        self.card_in_use: dict[str, set[str]] = {}  # card uuid -> MIG uuids in use
        self.mig_home: dict[str, tuple[str, str]] = {}  # free MIG uuid -> (pool key, card uuid)
        self.dc_of: dict[str, str] = {}
        self.revision: dict[str, int] = {}
        self.flashboot: dict[str, list[str]] = {}  # endpoint id -> hosts
        self.images: dict[str, list[str]] = {}  # image -> hosts
        self.models: dict[str, list[str]] = {}  # endpoint id -> hosts whose model cache holds its model
        self.reserved: set[str] = set()  # cards re-cut by this plan
        self.no_recut: set[tuple[str, tuple[str, ...] | None, Ask]] = set()
        self.room: dict[str, Room] = {}  # free CPU/RAM of hosts that report them
        self.hostname: dict[str, str] = {}
        for node in snapshot.nodes:
            if not (node.draining or node.lost):
                self._add_node(node.node_id, node.inventory.datacenter, node)
        for pool in (*self.gpu_pools.values(), *self.mig_pools.values()):
            pool.seal()

    def _add_node(self, node_id: str, dc: str, node: NodeSnapshot) -> None:
        self.dc_of[node_id] = dc
        self.revision[node_id] = node.revision
        self.hostname[node_id] = node.inventory.hostname or node_id
        room = host_room(
            node.inventory,
            requested_cpus=node.requested_cpus,
            requested_memory_mb=node.requested_memory_mb,
            reserve=self.reserve,
        )
        if room is not None:
            self.room[node_id] = room
        in_use = set(node.in_use)
        for ep in node.flashboot_endpoints:
            self.flashboot.setdefault(ep, []).append(node_id)
        for ep in node.model_endpoints:
            self.models.setdefault(ep, []).append(node_id)
        for image in node.inventory.images:
            self.images.setdefault(image, []).append(node_id)
        for gpu in sorted(node.inventory.gpus, key=lambda g: g.index):
            type_id = canonical_gpu_type(gpu.type_id)
            if not gpu.mig_enabled:
                if gpu.uuid not in in_use:
                    self.gpu_pools.setdefault(type_id, Pool(key=type_id)).add(node_id, dc, gpu.uuid)
                continue
            self.mig_cards.setdefault(type_id, []).append((node_id, gpu))
            used = self.card_in_use[gpu.uuid] = set()
            for inst in gpu.mig_instances:
                if inst.busy or inst.uuid in in_use:
                    used.add(inst.uuid)
                    continue
                key = f"{type_id}:{inst.profile}"
                self.mig_pools.setdefault(key, Pool(key=key)).add(node_id, dc, inst.uuid)
                self.mig_memory[key] = profile_memory_gb(inst.profile)
                self.mig_home[inst.uuid] = (key, gpu.uuid)

    def fits(self, ask: Ask) -> Callable[[str], bool] | None:
        """The host filter for ``ask``; None (no filter: the buckets' fast path) for no ask."""
        if ask.empty or not self.room:
            return None
        room = self.room

        def fits(node: str) -> bool:
            found = room.get(node)
            return found is None or found.fits(ask)

        return fits

    def charge(self, node: str, ask: Ask) -> None:
        room = self.room.get(node)
        if room is not None:
            room.take(ask)

    def take_mig(self, pool: Pool, node: str) -> str:
        uuid = pool.take(node, 1)[0]
        _, card = self.mig_home.pop(uuid)
        self.card_in_use[card].add(uuid)
        return uuid

    def reserve_card(self, node: str, card: GpuInfo) -> None:
        """A re-cut may destroy the card's idle instances: hand none of them out."""
        self.reserved.add(card.uuid)
        for inst in card.mig_instances:
            home = self.mig_home.pop(inst.uuid, None)
            if home is not None:
                self.mig_pools[home[0]].remove(node, inst.uuid)


class Want(NamedTuple):
    """One request's needs, as every worker of it is placed."""

    endpoint_id: str
    needs: list[GpuNeed]
    gpu_count: int
    dcs: frozenset[str] | None
    tiers: Tiers
    ask: Ask  # CPU and RAM per worker
    fits: Callable[[str], bool] | None  # hosts with room for ``ask`` (None = all)

    @classmethod
    def of(cls, ix: Index, req: PlacementRequest) -> Want:
        tiers: Tiers = [
            (f"flashboot:{req.endpoint_id}", ix.flashboot.get(req.endpoint_id, [])),
            (f"model:{req.spec.model}", ix.models.get(req.endpoint_id, [])),
            (f"image:{req.spec.image}", ix.images.get(req.spec.image, [])),
        ]
        ask = ask_of(req.spec)
        return cls(
            endpoint_id=req.endpoint_id,
            needs=[parse_gpu_type_id(t) for t in req.spec.gpu_type_ids] or [ANY_GPU],
            gpu_count=req.spec.gpu_count,
            dcs=frozenset(req.spec.data_center_ids) or None,
            tiers=tiers,
            ask=ask,
            fits=ix.fits(ask),
        )


def gpu_pools(ix: Index, need: GpuNeed) -> list[Pool]:
    return list(ix.gpu_pools.values()) if need.kind == "any" else _pools(ix.gpu_pools, need.type_id)


def mig_pool_groups(ix: Index, need: GpuNeed) -> list[list[Pool]]:
    """Pools that satisfy a MIG need, grouped by preference (smallest adequate memory first)."""
    if need.kind == "mig":
        return [_pools(ix.mig_pools, f"{need.type_id}:{need.profile}")]
    by_memory: dict[int, list[Pool]] = {}
    for key, pool in ix.mig_pools.items():
        gb = ix.mig_memory[key]
        if gb >= need.min_memory_gb:
            by_memory.setdefault(gb, []).append(pool)
    return [by_memory[gb] for gb in sorted(by_memory)]


def _pools(pools: dict[str, Pool], key: str) -> list[Pool]:
    found = pools.get(key)
    return [] if found is None else [found]
