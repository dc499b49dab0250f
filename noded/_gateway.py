"""The worker gateway: a small reverse proxy on the host's loopback that carries its workers'
worker-API calls (job-take, job-done, job-stream, ping, job-stop) to any healthy coordinator
replica, so a replica's death does not stall the workers that were talking to it.

Workers are unmodified RunPod handlers: their ``RUNPOD_WEBHOOK_*`` URLs name one server, and
the SDK reacts to a dead one by looping on job-take and dropping a result after three quick
tries.  noded therefore points those URLs at this gateway (``gateway_env``), which runs as its
own process (noded/gateway.py) so that noded's own restarts do not cut workers off either.

What is resent to the next replica (``resend_safe``; docs/failover.md):

* a call that never reached a replica (connection refused, reset before it was sent): always;
* a call that reached one and got no answer (the replica died or went silent mid-call) only
  when a second delivery cannot do harm: the GETs (job-take, ping, job-stop; a job the dead
  replica handed out but never delivered is requeued by the reaper once its claim lapses:
  at least once, never lost) and job-done (fenced by the job's revision and worker: a second
  job-done for a job already final answers ``{"ignored": ...}``, a completion is written
  once).  job-stream is not: a chunk could be stored twice.  It gets a 502 and the SDK's own
  retry decides.

A replica is marked down on a connection failure, a 502/503/504 or a failed health probe
(``/readyz``, every ``probe_s``); calls in flight to a replica marked down are abandoned and,
where safe, resent at once: a partitioned replica that swallows packets stalls nothing for
longer than a probe timeout.  While no replica is healthy, resend-safe calls wait up to
``hold_s`` for one, so a job-done outlives a short full outage instead of being dropped.

Only the worker API goes through (``worker_route``), and its path goes as it was sent: matched
before any percent-decoding and forwarded without one, so that an encoded ``/``, ``?`` or a
dot-segment cannot turn a worker route into another (an admin route, another query).  Anything
on the host's loopback can call the gateway; it is no way into the rest of the coordinator API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yarl
from aiohttp import web

__all__ = ["GATEWAY_PREFIX", "Gateway", "GatewaySettings", "gateway_env", "resend_safe", "worker_route"]

log = logging.getLogger("tide.noded.gateway")

GATEWAY_PREFIX = "/_gateway"  # the gateway's own routes (health); never forwarded
_FORWARDED = ("Authorization", "Content-Type", "X-Request-ID", "User-Agent")
_RETRY_STATUS = frozenset({502, 503, 504})
_SEG = r"[^/?#]+"
_WORKER_ROUTES = {
    "GET": re.compile(rf"/v2/{_SEG}/(?:job-take|job-take-batch|ping|job-stop)/{_SEG}(?:\?.*)?", re.S),
    "POST": re.compile(rf"/v2/{_SEG}/(?:job-done|job-stream)/{_SEG}/{_SEG}(?:\?.*)?", re.S),
}


def worker_route(method: str, raw_path: str) -> bool:
    """Whether ``raw_path`` (as sent, query included) is a call of the worker API.  Pure."""
    pattern = _WORKER_ROUTES.get(method)
    if pattern is None or not pattern.fullmatch(raw_path):
        return False
    return not any(seg in (".", "..") for seg in raw_path.split("?", 1)[0].split("/"))


def resend_safe(method: str, path: str) -> bool:
    """Whether a worker call that may have reached a replica can be sent again to another.  Pure."""
    if method == "GET":
        return True  # job-take(-batch), ping, job-stop
    return method == "POST" and "/job-done/" in path


def gateway_env(env: Mapping[str, str], base: str) -> dict[str, str]:
    """``env`` with every RUNPOD_WEBHOOK_* URL pointed at the gateway at ``base`` (path and
    query kept: the gateway forwards them as they are).  Pure."""
    scheme, netloc = urlsplit(base)[:2]
    out = dict(env)
    for key, value in env.items():
        if key.startswith("RUNPOD_WEBHOOK_") and "://" in value:
            parts = urlsplit(value)
            out[key] = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
    return out


@dataclass(slots=True)
class GatewaySettings:
    upstreams: Sequence[str]
    probe_s: float = 0.5  # health probe period per replica
    probe_timeout_s: float = 1.0
    connect_timeout_s: float = 1.0
    call_timeout_s: float = 120.0  # job-take long-polls for up to the coordinator's take-wait
    hold_s: float = 30.0  # how long a resend-safe call waits for some replica to be healthy


@dataclass(slots=True)
class _Upstream:
    url: str
    healthy: bool = True
    down: asyncio.Event = field(default_factory=asyncio.Event)  # set while marked down
    failures: int = 0


class _Ambiguous(Exception):
    """The call may have reached the replica; no answer came back."""


class _NotSent(Exception):
    """The call never reached the replica."""


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        if not settings.upstreams:
            raise ValueError("the gateway needs at least one coordinator URL")
        self.settings = settings
        self._ups = [_Upstream(u.rstrip("/")) for u in settings.upstreams]
        self._session: aiohttp.ClientSession | None = None
        self._probe: asyncio.Task[None] | None = None
        self._healthy = asyncio.Event()
        self._healthy.set()
        self.forwarded = 0
        self.resent = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 << 20)  # job-done bodies: the coordinator limits them
        app.router.add_get(GATEWAY_PREFIX + "/healthz", self._health)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=s.call_timeout_s, sock_connect=s.connect_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        self._probe = asyncio.create_task(self._probe_loop(), name="gateway-probe")

    async def _stop(self, _: web.Application) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._session is not None:
            await self._session.close()

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "pid": os.getpid(),
                "upstreams": [u.url for u in self._ups],
                "healthy": [u.url for u in self._ups if u.healthy],
                "forwarded": self.forwarded,
                "resent": self.resent,
            }
        )

    # -- health ------------------------------------------------------------
    def _mark(self, up: _Upstream, healthy: bool, why: str = "") -> None:
        if up.healthy == healthy:
            return
        up.healthy = healthy
        if healthy:
            up.down.clear()
            log.info("coordinator %s is healthy again", up.url)
        else:
            up.down.set()  # abandons the calls in flight to it
            log.warning("coordinator %s marked down: %s", up.url, why)
        if any(u.healthy for u in self._ups):
            self._healthy.set()
        else:
            self._healthy.clear()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self._probe_one(u) for u in self._ups))
            await asyncio.sleep(self.settings.probe_s)

    async def _probe_one(self, up: _Upstream) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self.settings.probe_timeout_s)
        try:
            async with self._session.get(up.url + "/readyz", timeout=timeout) as resp:
                ok = resp.status == 200
                await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self._mark(up, ok, "health probe failed")

    # -- forwarding ----------------------------------------------------------
    async def _forward(self, request: web.Request) -> web.Response:
        if not worker_route(request.method, request.raw_path):
            return _error(
                404,
                f"the worker gateway carries only the worker API (GET job-take, job-take-batch, ping, "
                f"job-stop; POST job-done, job-stream under /v2/<endpoint>/), not {request.method} "
                f"{request.raw_path[:200]}",
            )
        body = await request.read()
        headers = {h: request.headers[h] for h in _FORWARDED if h in request.headers}
        safe = resend_safe(request.method, request.path)
        deadline = time.monotonic() + self.settings.hold_s
        self.forwarded += 1
        tries = 0
        while True:
            # Healthy replicas in configured order (every worker on a host uses the same one);
            # with none healthy, a resend-safe call waits for the probes, anything else tries all.
            ups = [u for u in self._ups if u.healthy]
            if not ups and safe and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, max(0.0, deadline - time.monotonic()))):
                        await self._healthy.wait()
                continue
            for up in ups or self._ups:
                self.resent += 1 if tries else 0
                tries += 1
                try:
                    return await self._try(up, request, headers, body, safe)
                except _NotSent:
                    continue
                except _Ambiguous:
                    if not safe:
                        return _error(502, f"coordinator {up.url} did not answer; the call may have run")
            if not safe or time.monotonic() > deadline:
                return _error(503, "no coordinator replica is reachable")

    async def _try(
        self, up: _Upstream, request: web.Request, headers: dict[str, str], body: bytes, safe: bool
    ) -> web.Response:
        call = asyncio.create_task(self._send(up, request, headers, body))
        # A replica already down (a last-ditch try) is not watched: its flag is set already.
        watch = {asyncio.create_task(up.down.wait())} if up.healthy else set()
        try:
            await asyncio.wait({call, *watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in watch:
                w.cancel()
        if not call.done():  # marked down while the call was in flight
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Ambiguous, _NotSent):
                await call
            raise _Ambiguous
        status, ctype, payload = call.result()
        if status in _RETRY_STATUS and safe:  # not ready, or its store is away: try another
            self._mark(up, False, f"answered {status}")
            raise _NotSent
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    async def _send(
        self, up: _Upstream, request: web.Request, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        assert self._session is not None
        url = yarl.URL(up.url + request.raw_path, encoded=True)  # as sent: no decoding, no normalizing
        try:
            async with self._session.request(request.method, url, data=body or None, headers=headers) as r:
                return r.status, r.headers.get("Content-Type", "application/json"), await r.read()
        except aiohttp.ClientConnectorError as exc:
            self._mark(up, False, str(exc))
            raise _NotSent from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._mark(up, False, f"{type(exc).__name__}: {exc}")
            raise _Ambiguous from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
