"""The placer: a pure function from (cluster snapshot, requests) to a placement plan.

Rules, in the order they apply to each worker (requests and their workers are
placed in the order given; the caller orders them by priority):

1. Candidate hosts are those not draining and not lost, in the endpoint's
   ``data_center_ids`` (empty = every data center).
2. The endpoint's ``gpu_type_ids`` are tried in order; the first entry with a
   fitting host wins, so a lower priority is used only when every higher one
   is full for this worker.  An empty list means any whole-GPU type.  (RunPod
   spreads >= 5 workers over priorities; Tide fills the first priority first,
   which keeps an endpoint on one card type while that type has room.)
3. A whole-GPU entry needs ``gpu_count`` free GPUs of that type on ONE host.
   A MIG entry (``"H100-80GB:3g.40gb"``, ``"mig-24gb"``) takes one free MIG
   instance: MIG devices are one per worker, so with ``gpu_count`` > 1 MIG
   entries are skipped.  A memory class takes the smallest slice that fits
   (least memory wasted), across card types.
4. Among fitting hosts: first those holding the endpoint's FlashBoot snapshot,
   then those holding its image, then all; within each tier the fullest host
   (fewest free devices of the kind that still fit) wins, to keep whole hosts
   free for 8-GPU workers.  Lowest-index GPUs on the host are taken.
5. When no free MIG instance fits, each MIG-enabled card of the type (any type
   for a memory class) is offered to the :class:`SliceFitter`; the first card
   it can re-cut is reserved for this worker (a :class:`SliceRecut` in the
   plan: the MIG planner creates the slice and a later pass places the
   worker).  A reserved card gives no free instances to later workers.
6. When nothing fits, the worker and the rest of its request are unplaced,
   with one human reason per endpoint naming every entry tried.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from coordinator.scheduling._capacity import Buckets, Pool
from coordinator.scheduling._gpu_types import (
    ANY_GPU,
    GpuNeed,
    canonical_gpu_type,
    parse_gpu_type_id,
    profile_memory_gb,
)
from coordinator.scheduling._placement_types import (
    NO_RECUT,
    Assignment,
    ClusterSnapshot,
    NodeSnapshot,
    PlacementPlan,
    PlacementRequest,
    SliceFitter,
    SliceRecut,
)
from tide.api.nodes import GpuInfo

__all__ = ["plan_placement"]

Tiers = list[tuple[str, list[str]]]  # (view name, hosts) in preference order


class _Index:
    """Free capacity of one snapshot, consumed as the plan is built."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
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
        self.reserved: set[str] = set()  # cards re-cut by this plan
        self.no_recut: set[tuple[str, tuple[str, ...] | None]] = set()
        for node in snapshot.nodes:
            if not (node.draining or node.lost):
                self._add_node(node.node_id, node.inventory.datacenter, node)
        for pool in (*self.gpu_pools.values(), *self.mig_pools.values()):
            pool.seal()

    def _add_node(self, node_id: str, dc: str, node: NodeSnapshot) -> None:
        self.dc_of[node_id] = dc
        self.revision[node_id] = node.revision
        in_use = set(node.in_use)
        for ep in node.flashboot_endpoints:
            self.flashboot.setdefault(ep, []).append(node_id)
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


def plan_placement(
    snapshot: ClusterSnapshot,
    requests: Sequence[PlacementRequest],
    *,
    slice_fitter: SliceFitter = NO_RECUT,
) -> PlacementPlan:
    """Place every requested worker it can.  Pure and deterministic; see the module docstring."""
    ix = _Index(snapshot)
    assignments: list[Assignment] = []
    recuts: list[SliceRecut] = []
    unplaced: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for req in requests:
        needs = [parse_gpu_type_id(t) for t in req.spec.gpu_type_ids] or [ANY_GPU]
        dcs = frozenset(req.spec.data_center_ids) or None
        tiers: Tiers = [
            (f"flashboot:{req.endpoint_id}", ix.flashboot.get(req.endpoint_id, [])),
            (f"image:{req.spec.image}", ix.images.get(req.spec.image, [])),
        ]
        for i, worker_id in enumerate(req.worker_ids):
            placed = _place_worker(ix, req, worker_id, needs, dcs, tiers, slice_fitter)
            if isinstance(placed, Assignment):
                assignments.append(placed)
            elif isinstance(placed, SliceRecut):
                recuts.append(placed)
            else:
                rest = req.worker_ids[i:]
                unplaced.setdefault(req.endpoint_id, []).extend(rest)
                reasons[req.endpoint_id] = _reason(ix, needs, req.spec.gpu_count, len(rest), dcs)
                break
    touched = {a.node_id for a in assignments} | {r.node_id for r in recuts}
    return PlacementPlan(
        assignments=assignments,
        recuts=recuts,
        unplaced=unplaced,
        reasons=reasons,
        node_revisions={n: ix.revision[n] for n in sorted(touched)},
        snapshot_revision=snapshot.revision,
    )


def _place_worker(
    ix: _Index,
    req: PlacementRequest,
    worker_id: str,
    needs: list[GpuNeed],
    dcs: frozenset[str] | None,
    tiers: Tiers,
    fitter: SliceFitter,
) -> Assignment | SliceRecut | None:
    count = req.spec.gpu_count
    for need in needs:
        if need.kind in ("gpu", "any"):
            pools = list(ix.gpu_pools.values()) if need.kind == "any" else _pools(ix.gpu_pools, need.type_id)
            pick = _pick(pools, count, dcs, tiers)
            if pick is not None:
                pool, node = pick
                devices = pool.take(node, count)
                return Assignment(
                    worker_id=worker_id,
                    endpoint_id=req.endpoint_id,
                    node_id=node,
                    gpu_type=pool.key,
                    devices=devices,
                    price_key=pool.key,
                )
            continue
        if count > 1:
            continue  # one MIG device per worker; gpuCount > 1 needs whole GPUs
        placed = _place_mig(ix, req, worker_id, need, dcs, tiers, fitter)
        if placed is not None:
            return placed
    return None


def _place_mig(
    ix: _Index,
    req: PlacementRequest,
    worker_id: str,
    need: GpuNeed,
    dcs: frozenset[str] | None,
    tiers: Tiers,
    fitter: SliceFitter,
) -> Assignment | SliceRecut | None:
    for pools in _mig_pool_groups(ix, need):
        pick = _pick(pools, 1, dcs, tiers)
        if pick is not None:
            pool, node = pick
            uuid = ix.take_mig(pool, node)
            type_id, profile = pool.key.split(":", 1)
            return Assignment(
                worker_id=worker_id,
                endpoint_id=req.endpoint_id,
                node_id=node,
                gpu_type=type_id,
                devices=[uuid],
                mig_profile=profile,
                price_key=pool.key,
            )
    return _recut(ix, req, worker_id, need, dcs, fitter)


def _mig_pool_groups(ix: _Index, need: GpuNeed) -> list[list[Pool]]:
    """Pools that satisfy a MIG need, grouped by preference (smallest adequate memory first)."""
    if need.kind == "mig":
        return [_pools(ix.mig_pools, f"{need.type_id}:{need.profile}")]
    by_memory: dict[int, list[Pool]] = {}
    for key, pool in ix.mig_pools.items():
        gb = ix.mig_memory[key]
        if gb >= need.min_memory_gb:
            by_memory.setdefault(gb, []).append(pool)
    return [by_memory[gb] for gb in sorted(by_memory)]


def _recut(
    ix: _Index,
    req: PlacementRequest,
    worker_id: str,
    need: GpuNeed,
    dcs: frozenset[str] | None,
    fitter: SliceFitter,
) -> SliceRecut | None:
    key = (need.label, None if dcs is None else tuple(sorted(dcs)))
    if key in ix.no_recut:
        return None  # capacity only shrinks during a plan: a failed scan stays failed
    types = [need.type_id] if need.kind == "mig" else sorted(ix.mig_cards)
    for type_id in types:
        for node, card in ix.mig_cards.get(type_id, []):
            if card.uuid in ix.reserved or (dcs is not None and ix.dc_of[node] not in dcs):
                continue
            profile = fitter.fit(gpu=card, in_use=frozenset(ix.card_in_use[card.uuid]), need=need)
            if profile is not None:
                ix.reserve_card(node, card)
                return SliceRecut(
                    node_id=node,
                    gpu_uuid=card.uuid,
                    profile=profile,
                    endpoint_id=req.endpoint_id,
                    worker_id=worker_id,
                )
    ix.no_recut.add(key)
    return None


def _pools(pools: dict[str, Pool], key: str) -> list[Pool]:
    found = pools.get(key)
    return [] if found is None else [found]


def _pick(
    pools: list[Pool], count: int, dcs: Collection[str] | None, tiers: Tiers
) -> tuple[Pool, str] | None:
    """The host to use: the first preference tier with a fit, fullest host there (ties: pool key)."""
    for name, hosts in tiers:
        if hosts:
            found = _fullest([(p, p.view(name, hosts)) for p in pools], count, dcs)
            if found is not None:
                return found
    return _fullest([(p, p.main) for p in pools], count, dcs)


def _fullest(
    candidates: list[tuple[Pool, Buckets]], count: int, dcs: Collection[str] | None
) -> tuple[Pool, str] | None:
    best: tuple[int, str, Pool, str] | None = None
    for pool, buckets in candidates:
        found = buckets.best(count, dcs)
        if found is not None and (best is None or (found[0], pool.key) < best[:2]):
            best = (found[0], pool.key, pool, found[1])
    return None if best is None else (best[2], best[3])


def _reason(ix: _Index, needs: list[GpuNeed], count: int, workers: int, dcs: frozenset[str] | None) -> str:
    """One line naming, for each entry tried, why it did not fit."""
    where = "any data center" if dcs is None else ", ".join(sorted(dcs))
    parts: list[str] = []
    for need in needs:
        if need.kind in ("mig", "mig-class"):
            if count > 1:
                parts.append(f"{need.label} is a MIG slice but gpuCount {count} needs whole GPUs")
            else:
                what = need.label if need.kind == "mig" else f"MIG slice of at least {need.min_memory_gb} GB"
                parts.append(
                    f"no free {what} in {where} ({workers} requested, 0 free) "
                    "and no MIG card can be re-cut to fit it"
                )
            continue
        pools = list(ix.gpu_pools.values()) if need.kind == "any" else _pools(ix.gpu_pools, need.type_id)
        caps = [p.capacity(dcs) for p in pools]
        total, most = sum(c[0] for c in caps), max((c[1] for c in caps), default=0)
        wanted = workers * count
        if total >= count:
            parts.append(
                f"no host with {count} free {need.label} in {where} "
                f"({wanted} requested, {total} free, at most {most} on one host)"
            )
        else:
            parts.append(f"no free {need.label} in {where} ({wanted} requested, {total} free)")
    return "; ".join(parts)
