"""The web console: its static files at ``/console`` (the page) and ``/console/{asset}``.

The files hold no secret and need no key (auth kind "none"): the page asks for an admin or
viewer key, keeps it in the tab's sessionStorage and sends it as a Bearer header to the admin
API, which is the only place its data comes from.  Only the files named in ``_ASSETS`` are
served (no path from the request reaches the file system).  The Content-Security-Policy
allows scripts, styles and fetches from this origin only, so nothing is loaded from elsewhere
and no inline script runs.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from tide.api.errors import NotFound

__all__ = ["ConsoleRoutes"]

_ASSETS = {
    "index.html": "text/html",
    "console.css": "text/css",
    "console.js": "text/javascript",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files("coordinator.api.console").joinpath(name).read_bytes()


def _file(name: str) -> web.Response:
    ctype = _ASSETS.get(name)
    if ctype is None:
        raise NotFound(f"the console has no file {name[:80]!r}; open /console")
    return web.Response(body=_read(name), content_type=ctype, charset="utf-8", headers=_HEADERS)


class ConsoleRoutes:
    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/console", self.page)
        app.router.add_get("/console/{asset}", self.asset)

    async def page(self, _: web.Request) -> web.Response:
        return _file("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return _file(request.match_info["asset"])
