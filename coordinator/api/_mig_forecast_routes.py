"""Admin route for the ahead-of-time MIG plan (``tide mig forecast``).

``GET /admin/v1/mig/forecast[?region=EU][&at=UNIX][&hours=24]`` answers, per region, the hour
the leader prepares for at ``at`` (default now; from ``leadS`` before it starts), the demand
forecast for it and its basis (hour-of-week, hour-of-day, or none yet), the plan the leader
would make (wanted, held, missing and surplus slices, the cards it would re-cut and the ones it
may not touch now, and why), the region's whole GPUs, and the next ``hours`` hours' forecast.
Read-only; any replica answers from the store and its view, with the coordinator config's
``[mig]`` settings (``aheadEnabled`` false: the forecast, but no re-cuts planned).
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from coordinator.api._http import json_response, query_int
from coordinator.control import MigAhead
from coordinator.scheduling import DEFAULT_AHEAD, AheadSettings
from coordinator.store import Store
from coordinator.view import ClusterView
from tide.api.errors import InvalidArgument, NotFound

__all__ = ["MigForecastRoutes"]


class MigForecastRoutes:
    def __init__(self, *, store: Store, view: ClusterView, settings: AheadSettings = DEFAULT_AHEAD) -> None:
        self._ahead = MigAhead(store, view, settings=settings)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/admin/v1/mig/forecast", self.forecast)

    async def forecast(self, request: web.Request) -> web.Response:
        at = _at(request.query.get("at", ""))
        hours = query_int(request, "hours", 24, 1, 168)
        regions = await self._ahead.report(at, hours)
        wanted = request.query.get("region")
        if wanted is not None:
            regions = [r for r in regions if r.region == wanted]
            if not regions:
                known = ", ".join(repr(r) for r in self._ahead.regions()) or "none"
                raise NotFound(f"no live node is in region {wanted!r} (regions: {known})")
        s = self._ahead.settings
        return json_response(
            {
                "at": at,
                "aheadEnabled": s.enabled,
                "leadS": s.lead_s,
                "cardIntervalS": s.card_interval_s,
                "maxCards": s.max_cards,
                "regions": regions,
            }
        )


def _at(raw: str) -> float:
    if not raw:
        return time.time()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"query parameter at={raw!r} must be unix seconds")
    return value
