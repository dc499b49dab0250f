"""The tide-coordinator component: HTTP APIs on any replica, control loops on
the elected leader only.

Lifecycle (DESIGN §4.4): ``start()`` returns once the view is loaded and the
HTTP server listens; ``stop(timeout)`` stops accepting, lets in-flight
requests finish, then cancels the loops.  Every background task belongs to the
component's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from coordinator._committer import GroupCommitter
from coordinator._leases import LeaseBuckets
from coordinator._token_secret import resolve_secret
from coordinator.api import ApiLimits, ApiSettings, HttpLimits, build_app, make_runner
from coordinator.batches import (
    BatchDispatcher,
    BatchJobFeed,
    BatchReads,
    BatchService,
    BatchSettings,
    ShardStore,
)
from coordinator.control import BlobSweeper, BlobSweepSettings, Scheduler, UsageCloser
from coordinator.jobs import (
    ColdStartRecorder,
    ColdStartTracker,
    JobBlobs,
    JobsContext,
    JobService,
    JobSettings,
    Reaper,
    WebhookSender,
    WorkerService,
)
from coordinator.scheduling import DEFAULT_HOST_RESERVE, AheadSettings, HostReserve, SuspendSettings
from coordinator.store import Election, Store
from coordinator.view import ClusterView, JobStatsFlusher
from tiered_storage import LocalObjectStore, ObjectStore

__all__ = ["Coordinator", "CoordinatorSettings"]

log = logging.getLogger("tide.coordinator")

LeaderLoop = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class CoordinatorSettings:
    host: str = "127.0.0.1"
    port: int = 8420
    state_dir: str = "/var/lib/tide/coordinator"
    admin_key_hashes: list[str] = field(default_factory=list)
    jobs: JobSettings = field(default_factory=JobSettings)
    election_ttl_s: float = 10.0
    public_url: str = ""  # how workers and nodes reach this coordinator
    prices: dict[str, float] = field(default_factory=dict)  # USD per GPU-hour by GPU type
    node_lost_after_s: float = 15.0
    mig_recut_interval_s: float = 30.0  # hysteresis of on-demand MIG re-cuts, per card
    host_reserve: HostReserve = DEFAULT_HOST_RESERVE  # CPU/RAM each host keeps back ([scheduler])
    mig_ahead: AheadSettings = field(default_factory=AheadSettings)  # ahead-of-time MIG ([mig])
    suspend: SuspendSettings = field(default_factory=SuspendSettings)  # suspended workers ([scheduler])
    api_limits: ApiLimits = field(default_factory=ApiLimits)  # per-endpoint public API limits ([limits])
    http: HttpLimits = field(default_factory=HttpLimits)  # header/body read timeouts ([server])
    sock: socket.socket | None = None  # a pre-bound socket (tests, tide dev)
    token_secret: bytes | None = None  # [auth] token-secret-file's content; None: etcd's (legacy)
    # Where inputs and outputs above the inline limit go ([blobs]); None: <state_dir>/blobs,
    # which only this replica sees (one replica, tide dev).
    objects: ObjectStore | None = None
    blob_sweep: BlobSweepSettings = field(default_factory=BlobSweepSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)  # [batch]


class Coordinator:
    def __init__(self, store: Store, settings: CoordinatorSettings) -> None:
        self.store = store
        self.settings = settings
        self.view = ClusterView(store)
        self.cold_starts = ColdStartTracker(self.view)  # fresh workers' first jobs (coldStart)
        self.view.subscribe(self.cold_starts)
        self.committer = GroupCommitter(store)
        self._leader_loops: list[LeaderLoop] = []
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.ctx: JobsContext | None = None
        self.is_leader = False
        self.url = ""

    def add_leader_loop(self, loop: LeaderLoop) -> None:
        """Register a loop that runs only while this replica leads (before start)."""
        self._leader_loops.append(loop)

    async def start(self) -> None:
        cluster_secret = await self._cluster_secret()
        self.ctx = JobsContext(
            store=self.store,
            committer=self.committer,
            view=self.view,
            leases=LeaseBuckets(self.store),
            blobs=JobBlobs(self.settings.objects or LocalObjectStore(f"{self.settings.state_dir}/blobs")),
            cold_starts=self.cold_starts,
            settings=self.settings.jobs,
        )
        jobs, workers = JobService(self.ctx), WorkerService(self.ctx)
        batch_settings = msgspec.structs.replace(self.settings.batch, prices=self.settings.prices)
        objects = self.ctx.blobs.objects
        dispatcher = BatchDispatcher(self.ctx, jobs, ShardStore(objects), batch_settings)
        self.view.subscribe(BatchJobFeed(dispatcher.wake))
        self._leader_loops.append(dispatcher.run)
        batches = (
            BatchService(self.store, objects, batch_settings),
            BatchReads(self.ctx, ShardStore(objects), batch_settings),
        )
        reaper = Reaper(self.ctx, max_retries=self._max_retries)
        self.scheduler = Scheduler(
            self.store,
            self.view,
            lost_after_s=self.settings.node_lost_after_s,
            mig_recut_interval_s=self.settings.mig_recut_interval_s,
            host_reserve=self.settings.host_reserve,
            mig_ahead=self.settings.mig_ahead,
            suspend=self.settings.suspend,
        )
        self._leader_loops[:0] = [reaper.run, WebhookSender(self.ctx).run, self.scheduler.run]
        self._leader_loops.append(ColdStartRecorder(self.store, self.view, self.cold_starts).run)
        self._leader_loops.append(UsageCloser(self.store, self.view).run)  # billing ends at exit
        self._leader_loops.append(
            BlobSweeper(self.store, self.ctx.blobs.objects, self.settings.blob_sweep).run
        )
        self._leader_loops.append(
            JobStatsFlusher(self.store, self.view.job_stats, lambda: self.view.revision).run
        )
        await self.committer.start()
        self._main = asyncio.create_task(self._supervise(), name="coordinator")
        ready = asyncio.create_task(self.view.ready.wait())
        await asyncio.wait([ready, self._main], return_when=asyncio.FIRST_COMPLETED)
        if self._main.done():
            ready.cancel()
            self._main.result()  # raises what stopped it
        sock = self._bind()
        self.app = build_app(
            store=self.store,
            view=self.view,
            cold_starts=self.cold_starts,
            jobs=jobs,
            workers=workers,
            settings=self._api_settings(),
            cluster_secret=cluster_secret,
            commit_seconds=lambda: self.committer.commit_seconds,
            # Workers and nodes are told this URL: with no public-url configured it is our own
            # listening address (known only once bound, hence the early bind).
            public_url=self.settings.public_url or self.url,
            objects=self.ctx.blobs.objects,
            batches=batches,
        )
        self._runner = make_runner(
            self.app, self.settings.http, access_log=None, handle_signals=False, shutdown_timeout=5.0
        )
        await self._runner.setup()
        await self._listen(sock)

    def _api_settings(self) -> ApiSettings:
        s = self.settings
        return ApiSettings(
            admin_key_hashes=s.admin_key_hashes,
            jobs=s.jobs,
            prices=s.prices,
            mig_ahead=s.mig_ahead,
            api_limits=s.api_limits,
            http=s.http,
        )

    async def _supervise(self) -> None:
        """Own every background task; leaves when ``stop`` is asked for."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.view.run(), name="view")
                tg.create_task(self._lead(), name="leader")
                await self._stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass

    def _bind(self) -> socket.socket:
        sock = self.settings.sock or socket.create_server(
            (self.settings.host, self.settings.port), reuse_port=False
        )
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return sock

    async def _listen(self, sock: socket.socket) -> None:
        assert self._runner is not None
        await web.SockSite(self._runner, sock).start()
        log.info("coordinator listening on %s", self.url)

    async def _cluster_secret(self) -> bytes:
        """The HMAC key for worker and node tokens: [auth] token-secret-file, else etcd's (legacy)."""
        return await resolve_secret(self.store, self.settings.token_secret)

    def _max_retries(self, ep: str) -> int:
        found = self.view.endpoints.get(ep)
        return found[0].spec.max_job_retries if found else 3

    async def _lead(self) -> None:
        """Campaign; while leader, run the control loops; on losing the lease, stop them."""
        while True:
            election = Election(self.store, "coordinator", ttl=self.settings.election_ttl_s)
            await election.campaign()
            self.is_leader = True
            log.info("this replica is now the leader")
            try:
                async with asyncio.TaskGroup() as tg:
                    loops = [tg.create_task(loop()) for loop in self._leader_loops]
                    await election.lost.wait()
                    for task in loops:
                        task.cancel()
            except* Exception as group:  # a loop crashed: log, resign, campaign again
                log.error("leader loop failed: %r", group.exceptions)
            finally:
                self.is_leader = False
                with contextlib.suppress(Exception):
                    await election.resign()
            await asyncio.sleep(0.5)

    async def stop(self, timeout: float = 10.0) -> None:
        self.view.close()  # long-polls answer "nothing" now instead of holding shutdown
        if self._runner is not None:
            await self._runner.cleanup()
        await self.committer.stop()
        self._stopping.set()
        if self._main is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._main


class _Stopping(Exception):
    pass
