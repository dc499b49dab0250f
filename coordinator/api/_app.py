"""Assembles the aiohttp application from the route modules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from coordinator.api._admin_routes import AdminRoutes
from coordinator.api._app_keys import APP_KEY_PRICES
from coordinator.api._auth import Auth
from coordinator.api._authz import authz_middleware
from coordinator.api._batch_routes import BatchRoutes
from coordinator.api._bundle_routes import BundleRoutes
from coordinator.api._cluster_routes import ClusterRoutes
from coordinator.api._console_routes import ConsoleRoutes
from coordinator.api._graphql_routes import GraphQLRoutes
from coordinator.api._http import error_middleware, json_response
from coordinator.api._limits import ApiLimits
from coordinator.api._metrics import Metrics
from coordinator.api._mig_forecast_routes import MigForecastRoutes
from coordinator.api._mig_routes import MigRoutes
from coordinator.api._node_routes import NodeRoutes
from coordinator.api._openai_routes import OpenAIRoutes
from coordinator.api._openapi import add_openapi_route
from coordinator.api._public_routes import PublicRoutes
from coordinator.api._routes_table import ROUTES
from coordinator.api._server import HttpLimits, body_timeout_middleware
from coordinator.api._throttle import APP_KEY_THROTTLE, Throttle
from coordinator.api._worker_routes import WorkerRoutes
from coordinator.batches import BatchReads, BatchService
from coordinator.jobs import ColdStartTracker, JobService, JobSettings, WorkerService
from coordinator.scheduling import AheadSettings
from coordinator.store import Store
from coordinator.view import ClusterView
from tiered_storage import ObjectStore

__all__ = ["APP_KEY_AUTH", "ApiSettings", "build_app"]

APP_KEY_AUTH = web.AppKey("auth", Auth)

_MAX_BODY = 64 * 1024 * 1024 + 1024  # results may be large; /run and /runsync check their own limits


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What the routes are configured with (the coordinator's settings, as the APIs see them)."""

    admin_key_hashes: list[str] = field(default_factory=list)
    jobs: JobSettings = field(default_factory=JobSettings)
    prices: dict[str, float] = field(default_factory=dict)  # USD per GPU-hour by GPU type
    mig_ahead: AheadSettings = field(default_factory=AheadSettings)  # the forecast report plans with it
    api_limits: ApiLimits = field(default_factory=ApiLimits)
    http: HttpLimits = field(default_factory=HttpLimits)  # header/body read timeouts ([server])


def build_app(
    *,
    store: Store,
    view: ClusterView,
    cold_starts: ColdStartTracker,
    jobs: JobService,
    workers: WorkerService,
    settings: ApiSettings,
    cluster_secret: bytes,
    commit_seconds: Callable[[], list[float]],
    public_url: str,
    objects: ObjectStore,
    batches: tuple[BatchService, BatchReads],
) -> web.Application:
    # The body timeout inside the error middleware: the timeout's 408 is answered by it, and
    # anything else the late read raises is still mapped by the error middleware.
    # The credential check right after the error middleware: every route is checked by its
    # row of the route table before its body is read (_authz).
    auth = Auth(view, admin_key_hashes=settings.admin_key_hashes, cluster_secret=cluster_secret, store=store)
    middlewares = [
        error_middleware,
        authz_middleware(auth, ROUTES),
        body_timeout_middleware(settings.http.body_timeout_s),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=_MAX_BODY)
    app[APP_KEY_AUTH] = auth
    metrics = Metrics(view, commit_seconds, cold_starts)
    app[APP_KEY_THROTTLE] = Throttle(
        view,
        limits=dict(settings.api_limits.routes),
        enabled=settings.api_limits.enabled,
        on_refused=lambda ep, route, kind: metrics.api_refused.labels(ep, route, kind).inc(),
    )
    # Worker routes first: aiohttp tries /v2/{ep}/... routes in order, and
    # job-take/job-done are the hottest.
    WorkerRoutes(workers=workers, auth=auth, settings=settings.jobs, metrics=metrics).add_to(app)
    PublicRoutes(
        jobs=jobs,
        auth=auth,
        settings=settings.jobs,
        metrics=metrics,
        endpoints=view.endpoints,
        throttle=app[APP_KEY_THROTTLE],
    ).add_to(app)
    OpenAIRoutes(
        jobs=jobs,
        throttle=app[APP_KEY_THROTTLE],
        settings=settings.jobs,
        endpoints=view.endpoints,
    ).add_to(app)
    BatchRoutes(
        batches=batches[0], reads=batches[1], settings=batches[0].settings, throttle=app[APP_KEY_THROTTLE]
    ).add_to(app)
    AdminRoutes(store=store, view=view, cold_starts=cold_starts, auth=auth, jobs=jobs).add_to(app)
    # Workers ping at least three times per claim grace, so a live worker's claims never lapse.
    ping_s = min(settings.jobs.ping_interval_s, settings.jobs.claim_grace_s / 3)
    NodeRoutes(store=store, view=view, auth=auth, public_url=public_url, worker_ping_s=ping_s).add_to(app)
    ClusterRoutes(store=store, view=view, cold_starts=cold_starts, auth=auth).add_to(app)
    MigRoutes(store=store, view=view).add_to(app)
    GraphQLRoutes(store=store, view=view, jobs=jobs, auth=auth, prices=settings.prices).add_to(app)
    BundleRoutes(objects).add_to(app)
    MigForecastRoutes(store=store, view=view, settings=settings.mig_ahead).add_to(app)
    ConsoleRoutes().add_to(app)
    app[APP_KEY_PRICES] = settings.prices

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"ok": True})

    async def readyz(_: web.Request) -> web.Response:
        if not view.ready.is_set():
            return json_response({"ready": False, "error": "store view not loaded yet"}, 503)
        return json_response({"ready": True, "revision": view.revision})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.handle)
    add_openapi_route(app)
    return app
