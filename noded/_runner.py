"""One runner per worker (Nomad's task runner): start or adopt, watch, restart
with backoff while desired, stop when no longer desired.

Everything else about a worker's start and stop (its report directory, FlashBoot, its boot
report) is a hook (noded/hooks/): the runner runs their phases at the points
noded/hooks/_protocol.py draws, and knows none of them.

Killing a worker (``kill``) and noded shutting down (``detach``) are separate
paths: a detached runner stops watching and leaves the worker running for
the next noded to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from noded.hooks import PoststartRequest, WorkerHooks
from noded.runtime import ContainerRuntime, Suspendable, WorkerSpec, WorkerStatus
from tide.api.errors import NotFound, TideError
from tide.api.nodes import WorkerReport, WorkerResume, WorkerState

__all__ = ["RestartPolicy", "WorkerRunner"]

log = logging.getLogger("tide.noded.runner")


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When to restart an exited worker, and when to call it unhealthy.

    Exponential backoff over the exits of the last ``window`` seconds: the
    first exit in a window waits ``base``, each further one twice as long, up
    to ``cap``.  A worker that ran quietly for a whole window starts again at
    ``base`` (Nomad's restart interval): one crash a day must not wait 30 s.
    ``unhealthy_after`` exits inside the window make it unhealthy, which the
    autoscaler treats as broken (replaced rather than counted as capacity).
    """

    base: float = 1.0
    cap: float = 30.0
    unhealthy_after: int = 5
    window: float = 300.0

    def recent(self, exits: Sequence[float], now: float) -> int:
        """How many of ``exits`` (unix times) fall inside the window ending at ``now``."""
        return sum(1 for t in exits if now - t < self.window)

    def delay(self, restarts: int) -> float:
        """Seconds to wait before restart number ``restarts`` (1 = the first) of a window."""
        return float(min(self.cap, self.base * 2 ** min(max(0, restarts - 1), 62)))

    def unhealthy(self, recent_exits: Sequence[float], now: float) -> bool:
        return self.recent(recent_exits, now) >= self.unhealthy_after


class WorkerRunner:
    def __init__(
        self,
        runtime: ContainerRuntime,
        spec: WorkerSpec,
        *,
        endpoint_id: str,
        revision: int,
        on_change: Callable[[], None],
        policy: RestartPolicy | None = None,
        stop_grace: float = 30.0,
        hooks: WorkerHooks | None = None,
        suspend_settle_s: float = 1.0,
    ) -> None:
        self.runtime = runtime
        self._hooks = hooks if hooks is not None else WorkerHooks()
        self.spec = self._hooks.prestart(spec)  # every start of this worker creates this spec
        self.endpoint_id = endpoint_id
        self.revision = revision
        self._on_change = on_change
        self._policy = policy or RestartPolicy()
        self._grace = stop_grace
        self.state: WorkerState = "pending"
        self.reason = ""
        self.exit_code: int | None = None
        self.restarts = 0
        self.started_at = 0.0  # when the runtime started the process (its own clock)
        self.planned_at = time.time()  # when noded's plan created this runner (cold-start stages)
        self.start_returned_at = 0.0  # when the runtime's start() last returned
        self._exits: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._killing = False
        # Held while create/start run: kill() waits for it, so a worker being
        # started is never left running behind a kill that cancelled its start.
        self._starting = asyncio.Lock()
        # Suspended workers (issue 16): what the coordinator wants, and the task that follows it.
        self._want_suspended = False
        self._settle = suspend_settle_s
        self._flip: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.rss_bytes = 0
        self.resume: WorkerResume | None = None
        self._fresh_now = False  # a failed resume: restart without the crash backoff

    @property
    def worker_id(self) -> str:
        return self.spec.id

    def report(self) -> WorkerReport:
        report = WorkerReport(
            worker_id=self.worker_id,
            endpoint_id=self.endpoint_id,
            state=self.state,
            reason=self.reason,
            exit_code=self.exit_code,
            restarts=self.restarts,
            started_at=self.started_at,
            revision=self.revision,
            rss_bytes=self.rss_bytes if self.state == "suspended" else 0,
            resume=self.resume,
        )
        return self._hooks.report(report)

    def run(
        self,
        tg: asyncio.TaskGroup,
        adopted: WorkerStatus | None = None,
        *,
        after: Sequence[asyncio.Future[None]] = (),
    ) -> None:
        """Run in ``tg``: adopt ``adopted`` if it runs, else start fresh once ``after`` are done
        (the stops of workers that held this worker's GPUs or its id)."""
        self._tg = tg
        self._task = tg.create_task(self._run(adopted, after), name=f"worker-{self.worker_id}")

    def _set(self, state: WorkerState, reason: str = "") -> None:
        self.state, self.reason = state, reason
        self._on_change()

    async def _run(self, adopted: WorkerStatus | None, after: Sequence[asyncio.Future[None]]) -> None:
        if after:  # wait, never cancel: asyncio.wait leaves the awaited stops alone if we are cancelled
            await asyncio.wait(after)
        if adopted is not None and adopted.state in ("running", "suspended"):
            log.info("adopted %s worker %s", adopted.state, self.worker_id)
            self.started_at = adopted.started_at
            self.rss_bytes = adopted.rss_bytes
            self._set("suspended" if adopted.state == "suspended" else "initializing")
        elif self._want_suspended:
            # Gone while suspended (its process died, or the runtime lost it): the coordinator drops
            # it and places a fresh worker when one is needed; a resume restarts this one.
            self._set("exited", "gone while suspended")
            return
        else:
            await self._start_fresh()
        self._kick()
        while not self._killing:
            status = await self._wait()
            if self._killing:
                return
            if self.state == "suspended":
                self.exit_code = status.exit_code
                self._set("exited", f"exited while suspended (code {status.exit_code})")
                return
            await self._after_exit(status)

    async def _wait(self) -> WorkerStatus:
        """Until the worker exits, its poststart hooks running beside it (cancelled then)."""
        async with asyncio.TaskGroup() as tg:
            hooks = tg.create_task(self._hooks.poststart(PoststartRequest(started_at=self.started_at)))
            try:
                return await self.runtime.wait(self.worker_id)
            except TideError as exc:  # its state vanished under us: treat it as an exit, restart
                log.warning("worker %s: cannot wait for it (%s); restarting it", self.worker_id, exc.message)
                return WorkerStatus(id=self.worker_id, state="exited")
            finally:
                hooks.cancel()

    async def _start_fresh(self) -> None:
        """Create and start; a failure is reported and retried with backoff, never raised."""
        failures = 0
        while not self._killing:
            try:
                await self._hooks.prepare()  # slow (a model fetch): outside the lock kill() takes
                async with self._starting:
                    if self._killing:
                        return
                    with contextlib.suppress(NotFound):
                        await self.runtime.delete(self.worker_id)
                    self._hooks.precreate()
                    await self.runtime.create(self.spec)
                    status = await self.runtime.start(self.worker_id)
            except (TideError, OSError) as exc:
                failures += 1
                message = exc.message if isinstance(exc, TideError) else str(exc)
                self._set("unhealthy", f"could not start: {message}")
                await asyncio.sleep(self._policy.delay(failures))
                continue
            self.start_returned_at = time.time()
            self.started_at = status.started_at or self.start_returned_at
            self._set("initializing")
            return

    async def _after_exit(self, status: WorkerStatus) -> None:
        now = time.time()
        self.exit_code = status.exit_code
        self._exits = [*self._exits[-19:], now]
        reason = f"exited with code {status.exit_code}"
        unhealthy = self._policy.unhealthy(self._exits, now)
        self._set("unhealthy" if unhealthy else "exited", reason + (" (crash-looping)" if unhealthy else ""))
        self.restarts += 1
        delay = 0.0 if self._fresh_now else self._policy.delay(self._policy.recent(self._exits, now))
        self._fresh_now = False
        log.warning("worker %s %s; restarting in %.1fs", self.worker_id, reason, delay)
        await asyncio.sleep(delay)
        if not self._killing:
            await self._start_fresh()

    # -- suspended workers (issue 16) ---------------------------------------
    def want_suspended(self, flag: bool) -> None:
        """The coordinator's DesiredWorker.suspended for this worker; followed in the background."""
        if flag == self._want_suspended:
            return
        self._want_suspended = flag
        self._kick()

    def _kick(self) -> None:
        if self._tg is not None and (self._flip is None or self._flip.done()):
            self._flip = self._tg.create_task(self._follow(), name=f"suspend-{self.worker_id}")

    async def _follow(self) -> None:
        while not self._killing:
            want = self._want_suspended
            if want and self.state == "initializing":
                await self._suspend()
            elif not want and self.state == "suspended":
                await self._resume()
            elif not want and self.state == "exited" and self._tg is not None and self._task_done():
                self._task = self._tg.create_task(self._run(None, ()), name=f"worker-{self.worker_id}")
            if want == self._want_suspended:
                return

    def _task_done(self) -> bool:
        return self._task is None or self._task.done()

    async def _suspend(self) -> None:
        """Freeze it once it has stayed marked for the settle time: the coordinator hands a marked
        worker no job, and undoes the mark of one whose take raced it (ARCHITECTURE.md)."""
        await asyncio.sleep(self._settle)
        if not self._want_suspended or self._killing or self.state != "initializing":
            return
        assert isinstance(self.runtime, Suspendable)
        try:
            status = await self.runtime.suspend(self.worker_id)
        except TideError as exc:
            log.warning("worker %s: cannot suspend it (%s); it keeps running", self.worker_id, exc.message)
            return
        self.rss_bytes = status.rss_bytes
        log.info("worker %s suspended (%d MiB of host RAM)", self.worker_id, status.rss_bytes >> 20)
        self._set("suspended")

    async def _resume(self) -> None:
        assert isinstance(self.runtime, Suspendable)
        t0 = time.time()
        try:
            status = await self.runtime.resume(self.worker_id)
        except TideError as exc:
            log.warning("worker %s: resume failed (%s); starting it afresh", self.worker_id, exc.message)
            self.resume = WorkerResume(path="fresh", resumed_at=t0, reason=exc.message)
            self._fresh_now = True
            self._set("initializing")  # its exit is then an ordinary one: restarted at once
            with contextlib.suppress(TideError):
                await self.runtime.stop(self.worker_id, grace=1.0)  # thaws what it can, then kills
            return
        took = time.time() - t0
        self.resume = WorkerResume(
            path="resume", resumed_at=t0, thaw_s=took, device_restore_s=status.restore_s
        )
        self.rss_bytes = 0
        log.info("worker %s resumed in %.1f ms", self.worker_id, took * 1000)
        self._set("initializing")

    async def kill(self) -> None:
        """Stop the worker for good: SIGTERM, grace, SIGKILL, delete.  Idempotent."""
        self._killing = True
        self._set("stopping")
        async with self._starting:  # let a create/start in flight finish, then stop what it started
            if self._task is not None:
                self._task.cancel()
            if self._flip is not None:
                self._flip.cancel()
        try:
            with contextlib.suppress(NotFound):
                await self.runtime.stop(self.worker_id, grace=self._grace)
            with contextlib.suppress(NotFound):
                await self.runtime.delete(self.worker_id)
        finally:  # stopped or not, it is not ours any more: its hooks clean up
            await self._hooks.stop()
        self._set("exited", "stopped by the scheduler")

    def detach(self) -> None:
        """noded is shutting down: stop watching, leave the worker running."""
        if self._task is not None:
            self._task.cancel()
