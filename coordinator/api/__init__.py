"""The coordinator's HTTP surfaces: public (/v2), worker (/v2 job-*), admin
(/admin/v1), node (/node/v1) and operations (/healthz, /readyz, /metrics)."""

from coordinator.api._app import ApiSettings, build_app
from coordinator.api._limits import LIMITS, ApiLimits, Route, RouteLimit
from coordinator.api._server import HttpLimits, make_runner

__all__ = [
    "LIMITS",
    "ApiLimits",
    "ApiSettings",
    "HttpLimits",
    "Route",
    "RouteLimit",
    "build_app",
    "make_runner",
]
