"""Admin routes for operators' MIG layouts (``tide mig plan|apply HOST GPU LAYOUT``).

``POST /admin/v1/nodes/{node}/gpus/{gpu}/mig`` ``{"layout": ["3g.40gb", "2g.20gb"], "dryRun": true}``
plans the layout with mig/'s planner against the instances the node reports (``{gpu}`` is a GPU
uuid or its index on the host) and answers with the placements and what would be destroyed and
created.  Unless ``dryRun``, it stores the layout for noded to apply, as the scheduler's re-cuts
are stored.  Busy instances (a worker is assigned to one, or noded saw a process on it) are never
planned away: such a layout is a 409 naming them.  ``GET`` on the same path shows the card's
stored layout and where noded stands with it; ``DELETE`` forgets it (noded then leaves the card's
instances as they are, and the scheduler cuts it again only on demand).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from coordinator._node_schema import MigLayoutRecord, nkeys
from coordinator._schema import encode
from coordinator.api._http import decode_body, json_response
from coordinator.scheduling import card_state, catalog_of
from coordinator.store import Store
from coordinator.view import ClusterView
from mig import Catalog, Layout, Transition, list_type_ids, load_catalog, plan_layout, plan_transition
from tide.api.errors import FailedPrecondition, NotFound
from tide.api.nodes import GpuInfo, MigInstance

__all__ = ["MigRoutes"]


class _LayoutRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    layout: list[str]
    dry_run: bool = False


class MigRoutes:
    def __init__(self, *, store: Store, view: ClusterView) -> None:
        self._store = store
        self._view = view

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/admin/v1/nodes/{node}/gpus/{gpu}/mig", self.set_layout)
        app.router.add_get("/admin/v1/nodes/{node}/gpus/{gpu}/mig", self.get_layout)
        app.router.add_delete("/admin/v1/nodes/{node}/gpus/{gpu}/mig", self.forget_layout)
        app.router.add_get("/admin/v1/mig/catalogs", self.catalogs)

    async def catalogs(self, _: web.Request) -> web.Response:
        """Every MIG-capable GPU type's grid and profiles: how to draw a card's slices (the
        console) or name a layout (``tide mig plan``)."""
        return json_response([_catalog_json(load_catalog(t)) for t in list_type_ids()])

    def _card(self, request: web.Request) -> tuple[str, GpuInfo, Catalog]:
        node, ref = request.match_info["node"], request.match_info["gpu"]
        found = self._view.nodes.get(node)
        if found is None:
            raise NotFound(f"node {node!r} not found; 'tide nodes' lists the nodes")
        gpus = found[0].inventory.gpus
        gpu = next((g for g in gpus if g.uuid == ref or str(g.index) == ref), None)
        if gpu is None:
            have = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
            raise NotFound(f"node {node} has no GPU {ref!r}; its GPUs: {have}")
        catalog = catalog_of(gpu.type_id)
        if catalog is None or not gpu.mig_capable:
            raise FailedPrecondition(
                f"GPU {gpu.index} on {node} is a {gpu.type_id}: it cannot be partitioned"
            )
        return node, gpu, catalog

    def _in_use(self, node: str) -> dict[str, str]:
        """Device uuid -> the worker assigned to it, on ``node``."""
        return {d: a.worker_id for a in self._view.assignments_of(node) for d in a.devices}

    async def set_layout(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read(), _LayoutRequest, what="MIG layout")
        node, gpu, catalog = self._card(request)
        owners = self._in_use(node)
        if not gpu.mig_enabled and gpu.uuid in owners:
            raise FailedPrecondition(
                f"worker {owners[gpu.uuid]} uses GPU {gpu.index} on {node} whole; "
                "it must stop before the card can enter MIG mode"
            )
        current = gpu.mig_instances if gpu.mig_enabled else []
        held = [i for i in current if i.busy or i.uuid in owners]
        layout = plan_layout(catalog, current, [p.strip() for p in req.layout], busy=held)
        if not isinstance(layout, Layout):
            users = ", ".join(f"{i.profile}@{i.start} ({owners.get(i.uuid, 'a process')})" for i in held)
            raise FailedPrecondition(f"{layout.reason}" + (f"; in use: {users}" if users else ""))
        step = plan_transition(current, layout, busy=held)
        assert isinstance(step, Transition)  # the layout keeps every busy instance
        if not req.dry_run:
            record = MigLayoutRecord(
                node_id=node,
                gpu_uuid=gpu.uuid,
                profiles=sorted(s.profile for s in layout.slots),
                written_at=time.time(),
                source="admin",
                reason="tide mig apply",
            )
            await self._store.put(nkeys.mig_layout(node, gpu.uuid), encode(record))
        return json_response(
            {
                **_identity(node, gpu, catalog),
                "layout": [_slot(catalog, s.profile, s.start) for s in layout.slots],
                "destroy": [_slot(catalog, s.profile, s.start) for s in step.destroy],
                "create": [_slot(catalog, s.profile, s.start) for s in step.create],
                "dryRun": req.dry_run,
                "applied": not req.dry_run,
            }
        )

    async def get_layout(self, request: web.Request) -> web.Response:
        node, gpu, catalog = self._card(request)
        found = self._view.mig_layouts.get(node, {}).get(gpu.uuid)
        record = found[0] if found else None
        error = self._view.nodes[node][0].inventory.mig_errors.get(gpu.uuid, "")
        return json_response(
            {
                **_identity(node, gpu, catalog),
                "instances": [_instance(i) for i in gpu.mig_instances],
                "wanted": sorted(record.profiles) if record else None,
                "source": record.source if record else "",
                "writtenAt": record.written_at if record else 0.0,
                "state": card_state(gpu, record, error),
                "error": error,
            }
        )

    async def forget_layout(self, request: web.Request) -> web.Response:
        """By GPU uuid, so a layout for a card that left the host can be forgotten too."""
        node, ref = request.match_info["node"], request.match_info["gpu"]
        cards = self._view.mig_layouts.get(node, {})
        found = self._view.nodes.get(node)
        by_index = {str(g.index): g.uuid for g in found[0].inventory.gpus} if found else {}
        gpu = ref if ref in cards else by_index.get(ref, ref)
        if gpu not in cards:
            raise NotFound(f"no stored MIG layout for GPU {ref!r} on node {node!r}")
        await self._store.delete(nkeys.mig_layout(node, gpu))
        return json_response({"nodeId": node, "gpu": gpu, "forgotten": True})


def _identity(node: str, gpu: GpuInfo, catalog: Catalog) -> dict[str, Any]:
    return {
        "nodeId": node,
        "gpu": gpu.uuid,
        "index": gpu.index,
        "typeId": catalog.type_id,
        "grid": catalog.grid,
        "migEnabled": gpu.mig_enabled,
    }


def _slot(catalog: Catalog, profile: str, start: int) -> dict[str, Any]:
    return {"profile": profile, "start": start, "size": catalog.profile(profile).size}


def _instance(i: MigInstance) -> dict[str, Any]:
    return {"profile": i.profile, "start": i.start, "size": i.size, "uuid": i.uuid, "busy": i.busy}


def _catalog_json(c: Catalog) -> dict[str, Any]:
    profiles = [
        {"name": p.name, "size": p.size, "memoryMb": p.memory_mb, "computeSlices": p.compute_slices}
        for p in c.profiles
    ]
    return {
        "typeId": c.type_id,
        "grid": c.grid,
        "computeSlices": c.compute_slices,
        "memoryMb": c.memory_mb,
        "profiles": profiles,
    }
