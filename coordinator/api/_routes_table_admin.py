"""The admin (/admin/v1) and node (/node/v1) rows of the route table (``_routes_table``)."""

from __future__ import annotations

import msgspec

from coordinator.api._mig_routes import _LayoutRequest
from coordinator.api._node_routes import _Beat, _Register
from coordinator.api._route_doc import Q, Raw, RouteDoc
from coordinator.control import RegionForecast
from tide.api import admin_responses as A
from tide.api.bundles import BundleOut
from tide.api.endpoints import ApiKeyCreate, EndpointSpec, EndpointUpdate
from tide.api.nodes import DesiredWorkers

__all__ = ["admin_rows", "node_rows"]


class MigForecast(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """GET /admin/v1/mig/forecast."""

    at: float
    ahead_enabled: bool
    lead_s: float
    card_interval_s: float
    max_cards: int
    regions: list[RegionForecast]


_TAR = Raw({"type": "string", "format": "binary"}, content_type="application/x-tar")


def admin_rows() -> list[RouteDoc]:
    e, k = "/admin/v1/endpoints", "/admin/v1/keys"
    return [
        RouteDoc(
            "POST",
            e,
            "admin",
            "createEndpoint",
            "Create an endpoint",
            {201: A.EndpointOut},
            EndpointSpec,
            errors=(400, 409),
        ),
        RouteDoc(
            "PUT",
            "/admin/v1/bundles/{sha}",
            "admin",
            "putBundle",
            "Store a code bundle (`tide deploy`) under its SHA-256; storing it again changes nothing",
            {200: BundleOut},
            _TAR,
            errors=(400, 413, 503),
        ),
        RouteDoc(
            "GET",
            "/admin/v1/bundles/{sha}",
            "viewer",
            "getBundle",
            "Whether a code bundle is stored, and its size",
            {200: BundleOut},
            errors=(400, 404, 503),
        ),
        RouteDoc("GET", e, "viewer", "listEndpoints", "Every endpoint", {200: list[A.EndpointDescribed]}),
        RouteDoc(
            "GET",
            e + "/{ep}",
            "viewer",
            "getEndpoint",
            "One endpoint",
            {200: A.EndpointDescribed},
            errors=(404,),
        ),
        RouteDoc(
            "PATCH",
            e + "/{ep}",
            "admin",
            "updateEndpoint",
            "Change an endpoint",
            {200: A.EndpointOut},
            EndpointUpdate,
            errors=(400, 404, 409),
        ),
        RouteDoc(
            "POST",
            e + "/{ep}/update",
            "admin",
            "postUpdateEndpoint",
            "Change an endpoint (RunPod's verb)",
            {200: A.EndpointOut},
            EndpointUpdate,
            errors=(400, 404, 409),
        ),
        RouteDoc(
            "DELETE",
            e + "/{ep}",
            "admin",
            "deleteEndpoint",
            "Delete an endpoint and its queue",
            {200: A.Deleted},
            errors=(404,),
        ),
        RouteDoc(
            "POST",
            e + "/{ep}/workers/{worker}/token",
            "admin",
            "createWorkerToken",
            "A token for a worker started by hand (it expires after ttl_s)",
            {200: A.WorkerToken},
            query=(Q("ttl_s", "seconds the token is valid", 60, 30 * 86400),),
            errors=(400, 404),
        ),
        RouteDoc(
            "GET",
            e + "/{ep}/jobs",
            "viewer",
            "listJobs",
            "The queue view",
            {200: A.JobList},
            query=(Q("limit", "most jobs to list", 1, 10_000),),
            errors=(400, 404),
        ),
        RouteDoc(
            "POST",
            k,
            "admin",
            "createKey",
            "Create an API key",
            {201: A.KeyCreated},
            ApiKeyCreate,
            errors=(400,),
        ),
        RouteDoc("GET", k, "viewer", "listKeys", "Every API key", {200: list[A.KeyOut]}),
        RouteDoc(
            "DELETE",
            k + "/{key}",
            "admin",
            "revokeKey",
            "Revoke a key (by id or name)",
            {200: A.KeyOut},
            errors=(404,),
        ),
    ]


def node_rows() -> list[RouteDoc]:
    n, mig = "/node/v1/nodes/{node}", "/admin/v1/nodes/{node}/gpus/{gpu}/mig"
    return [
        RouteDoc(
            "POST",
            "/node/v1/register",
            "node-join",
            "registerNode",
            "Register a new GPU host (join key), or a known one again (its node token, or admin)",
            {200: A.NodeRegistered},
            _Register,
            errors=(400,),
            tag="node",
        ),
        RouteDoc(
            "POST",
            n + "/heartbeat",
            "node",
            "nodeHeartbeat",
            "Inventory and worker reports",
            {200: A.HeartbeatAnswer},
            _Beat,
            errors=(400, 404, 409),
            tag="node",
        ),
        RouteDoc(
            "GET",
            n + "/desired",
            "node",
            "nodeDesired",
            "Long-poll the node's desired workers (changed after `after`, or after `wait` s)",
            {200: DesiredWorkers},
            query=(Q("after", "the revision last seen", 0, 2**62), Q("wait", "seconds", 0, 60)),
            errors=(400,),
            tag="node",
        ),
        RouteDoc(
            "GET",
            n + "/bundles/{sha}",
            "node",
            "nodeBundle",
            "A code bundle's tar, for the node's bundle cache",
            {200: _TAR},
            errors=(400, 404, 503),
            tag="node",
        ),
        RouteDoc(
            "GET",
            "/admin/v1/nodes",
            "viewer",
            "listNodes",
            "Every node",
            {200: Raw({"type": "array", "items": {"$ref": "#/components/schemas/NodeView"}})},
        ),
        RouteDoc(
            "DELETE",
            "/admin/v1/nodes/{node}",
            "admin",
            "forgetNode",
            "Forget a host (to re-image it): its record, token and MIG layouts",
            {200: A.NodeForgotten},
            errors=(404, 409),
        ),
        RouteDoc(
            "POST",
            "/admin/v1/nodes/{node}/drain",
            "admin",
            "drainNode",
            "Drain a node",
            {200: A.DrainAnswer},
            errors=(404, 409),
        ),
        RouteDoc(
            "POST",
            "/admin/v1/nodes/{node}/undrain",
            "admin",
            "undrainNode",
            "Undrain a node",
            {200: A.DrainAnswer},
            errors=(404, 409),
        ),
        RouteDoc(
            "GET",
            "/admin/v1/workers",
            "viewer",
            "listWorkers",
            "Every assigned worker",
            {200: list[A.WorkerRow]},
            query=(Q("endpoint", "only this endpoint's"),),
        ),
        RouteDoc(
            "GET",
            "/admin/v1/workers/{worker}/logs",
            "viewer",
            "workerLogs",
            "A worker's last log lines, from its node",
            {200: A.WorkerLogs},
            query=(Q("tail", "lines", 1, 10_000),),
            errors=(400, 404),
        ),
        RouteDoc(
            "GET",
            "/admin/v1/usage",
            "viewer",
            "usage",
            "GPU-seconds and cost by endpoint",
            {200: A.UsageReport},
            query=(Q("endpoint", "only this endpoint's"), Q("since", "unix seconds", 0, 2**40)),
            errors=(400,),
        ),
        RouteDoc(
            "GET", "/admin/v1/status", "viewer", "clusterStatus", "Cluster summary", {200: A.ClusterStatus}
        ),
        RouteDoc(
            "POST",
            mig,
            "admin",
            "setMigLayout",
            "Plan (and store) a card's MIG layout",
            {200: A.MigPlan},
            _LayoutRequest,
            errors=(400, 404, 409),
        ),
        RouteDoc(
            "GET", mig, "viewer", "getMigLayout", "A card's MIG state", {200: A.MigCard}, errors=(404, 409)
        ),
        RouteDoc(
            "DELETE",
            mig,
            "admin",
            "forgetMigLayout",
            "Forget a card's stored layout",
            {200: A.MigForgotten},
            errors=(404,),
        ),
        RouteDoc(
            "GET",
            "/admin/v1/mig/catalogs",
            "viewer",
            "migCatalogs",
            "Every MIG-capable GPU type's grid and profiles",
            {200: list[A.MigCatalogOut]},
        ),
        RouteDoc(
            "GET",
            "/admin/v1/mig/forecast",
            "viewer",
            "migForecast",
            "The ahead-of-time MIG plan",
            {200: MigForecast},
            query=(Q("region", "one region"), Q("at", "unix seconds"), Q("hours", "hours", 1, 168)),
            errors=(400, 404),
        ),
    ]
