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
6. A host takes a worker only when its free CPUs and RAM also fit the
   endpoint's ``cpus`` and ``memoryMb`` (see _resources.py: the host reserve
   is the ``host_reserve`` argument, 0 = no ask, hosts reporting 0 are unconstrained); hosts that do not are
   skipped as if their devices were taken, and rules 2-5 are otherwise
   unchanged.  A re-cut charges its worker's ask to the host at once.
7. When nothing fits, the worker and the rest of its request are unplaced,
   with one human reason per endpoint naming every entry tried.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.scheduling._capacity import Buckets, Pool
from coordinator.scheduling._gpu_types import GpuNeed
from coordinator.scheduling._index import Index, Want, gpu_pools, mig_pool_groups
from coordinator.scheduling._placement_types import (
    NO_RECUT,
    Assignment,
    ClusterSnapshot,
    PlacementPlan,
    PlacementRequest,
    SliceFitter,
    SliceRecut,
)
from coordinator.scheduling._reasons import reason
from coordinator.scheduling._resources import DEFAULT_HOST_RESERVE, HostReserve

__all__ = ["plan_placement"]


def plan_placement(
    snapshot: ClusterSnapshot,
    requests: Sequence[PlacementRequest],
    *,
    slice_fitter: SliceFitter = NO_RECUT,
    host_reserve: HostReserve = DEFAULT_HOST_RESERVE,
) -> PlacementPlan:
    """Place every requested worker it can.  Pure and deterministic; see the module docstring."""
    ix = Index(snapshot, host_reserve)
    assignments: list[Assignment] = []
    recuts: list[SliceRecut] = []
    unplaced: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}
    for req in requests:
        want = Want.of(ix, req)
        for i, worker_id in enumerate(req.worker_ids):
            placed = _place_worker(ix, want, worker_id, slice_fitter)
            if placed is None:
                rest = req.worker_ids[i:]
                unplaced.setdefault(req.endpoint_id, []).extend(rest)
                reasons[req.endpoint_id] = reason(ix, want, len(rest))
                break
            ix.charge(placed.node_id, want.ask)
            if isinstance(placed, Assignment):
                assignments.append(placed)
            else:
                recuts.append(placed)
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
    ix: Index, want: Want, worker_id: str, fitter: SliceFitter
) -> Assignment | SliceRecut | None:
    count = want.gpu_count
    for need in want.needs:
        if need.kind in ("gpu", "any"):
            pick = _pick(gpu_pools(ix, need), count, want)
            if pick is not None:
                pool, node = pick
                devices = pool.take(node, count)
                return Assignment(
                    worker_id=worker_id,
                    endpoint_id=want.endpoint_id,
                    node_id=node,
                    gpu_type=pool.key,
                    devices=devices,
                    price_key=pool.key,
                )
            continue
        if count > 1:
            continue  # one MIG device per worker; gpuCount > 1 needs whole GPUs
        placed = _place_mig(ix, want, worker_id, need, fitter)
        if placed is not None:
            return placed
    return None


def _place_mig(
    ix: Index, want: Want, worker_id: str, need: GpuNeed, fitter: SliceFitter
) -> Assignment | SliceRecut | None:
    for pools in mig_pool_groups(ix, need):
        pick = _pick(pools, 1, want)
        if pick is not None:
            pool, node = pick
            uuid = ix.take_mig(pool, node)
            type_id, profile = pool.key.split(":", 1)
            return Assignment(
                worker_id=worker_id,
                endpoint_id=want.endpoint_id,
                node_id=node,
                gpu_type=type_id,
                devices=[uuid],
                mig_profile=profile,
                price_key=pool.key,
            )
    return _recut(ix, want, worker_id, need, fitter)


def _recut(ix: Index, want: Want, worker_id: str, need: GpuNeed, fitter: SliceFitter) -> SliceRecut | None:
    dcs = want.dcs
    key = (need.label, None if dcs is None else tuple(sorted(dcs)), want.ask)
    if key in ix.no_recut:
        return None  # capacity only shrinks during a plan: a failed scan stays failed
    types = [need.type_id] if need.kind == "mig" else sorted(ix.mig_cards)
    for type_id in types:
        for node, card in ix.mig_cards.get(type_id, []):
            if card.uuid in ix.reserved or (dcs is not None and ix.dc_of[node] not in dcs):
                continue
            if want.fits is not None and not want.fits(node):
                continue  # the slice would be cut for a worker this host has no CPU/RAM for
            profile = fitter.fit(gpu=card, in_use=frozenset(ix.card_in_use[card.uuid]), need=need)
            if profile is not None:
                ix.reserve_card(node, card)
                return SliceRecut(
                    node_id=node,
                    gpu_uuid=card.uuid,
                    profile=profile,
                    endpoint_id=want.endpoint_id,
                    worker_id=worker_id,
                )
    ix.no_recut.add(key)
    return None


def _pick(pools: list[Pool], count: int, want: Want) -> tuple[Pool, str] | None:
    """The host to use: the first preference tier with a fit, fullest host there (ties: pool key)."""
    for name, hosts in want.tiers:
        if hosts:
            found = _fullest([(p, p.view(name, hosts)) for p in pools], count, want)
            if found is not None:
                return found
    return _fullest([(p, p.main) for p in pools], count, want)


def _fullest(candidates: list[tuple[Pool, Buckets]], count: int, want: Want) -> tuple[Pool, str] | None:
    best: tuple[int, str, Pool, str] | None = None
    for pool, buckets in candidates:
        found = buckets.best(count, want.dcs, want.fits)
        if found is not None and (best is None or (found[0], pool.key) < best[:2]):
            best = (found[0], pool.key, pool, found[1])
    return None if best is None else (best[2], best[3])
