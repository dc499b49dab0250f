"""NodeAgent: tide-noded's core component.

register → (adopt what the runtime already runs) → loops:
  * desired:   long-poll the coordinator; on every answer, plan and apply;
  * heartbeat: inventory and worker reports, every few seconds and on change;
  * one WorkerRunner per worker (noded/_runner.py), running the worker's hooks
    (noded/hooks/: report directory, FlashBoot, boot report).

``plan_workers`` is pure: desired workers and what runs → start / stop /
replace.  SIGTERM stops the agent, not the workers (``detach``); a restarted
agent adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from flashboot import KeeperConfig
from noded._bundles import BundleCache
from noded._client import CoordinatorClient
from noded._flashboot import FlashbootHost
from noded._mig import MigReconciler, mark_in_use
from noded._runner import RestartPolicy, WorkerRunner
from noded.hooks import HookHost, worker_hooks
from noded.inventory import GpuInventory, host_facts
from noded.runtime import ContainerRuntime, ResourceLimits, Suspendable, WorkerSpec, WorkerStatus
from tide.api.errors import NotFound, TideError
from tide.api.nodes import DesiredWorker, GpuInfo, Heartbeat, NodeInventory
from tiered_storage import ModelCache

__all__ = ["AgentSettings", "NodeAgent", "WorkerPlan", "plan_workers"]

log = logging.getLogger("tide.noded")

LABEL_OWNER, LABEL_WORKER, LABEL_ENDPOINT, LABEL_REVISION = (
    "tide.owner",
    "tide.worker",
    "tide.endpoint",
    "tide.revision",
)


class WorkerPlan(msgspec.Struct, frozen=True, kw_only=True):
    start: list[DesiredWorker] = []  # not running here yet
    adopt: list[DesiredWorker] = []  # running from an earlier noded, same revision
    stop: list[str] = []  # running (or runners) no longer desired
    replace: list[DesiredWorker] = []  # running an older revision

    @property
    def empty(self) -> bool:
        return not (self.start or self.adopt or self.stop or self.replace)


def plan_workers(
    desired: Sequence[DesiredWorker], observed: Sequence[WorkerStatus], runners: dict[str, int]
) -> WorkerPlan:
    """What to do so this host runs exactly ``desired``.  Pure.

    ``runners`` maps the worker ids this agent already manages to their
    revision; ``observed`` is what the runtime has (including workers an
    earlier noded started).  A desired worker is left to its runner at the same
    revision, adopted when it runs here at the same revision without a runner,
    replaced when its revision changed, else started.  Everything else the
    runtime or the runners hold is stopped (exited and never-started leftovers
    too, so their state is deleted); a desired worker is never stopped.
    Applying the plan and planning again yields an empty plan.
    """
    want = {d.worker_id: d for d in desired}
    seen = {o.id: o for o in observed}
    start: list[DesiredWorker] = []
    adopt: list[DesiredWorker] = []
    replace: list[DesiredWorker] = []
    for wid, d in sorted(want.items()):
        if wid in runners:
            if runners[wid] != d.revision:
                replace.append(d)
        elif wid in seen and seen[wid].state in ("running", "suspended"):
            same = seen[wid].labels.get(LABEL_REVISION) == str(d.revision)
            (adopt if same else replace).append(d)
        else:
            start.append(d)
    stop = sorted((set(runners) | set(seen)) - set(want))
    return WorkerPlan(start=start, adopt=adopt, stop=stop, replace=replace)


@dataclass(slots=True)
class AgentSettings:
    hostname: str
    region: str = ""
    datacenter: str = ""
    heartbeat_s: float = 2.0
    stop_grace_s: float = 30.0
    address: str = ""  # this agent's own HTTP address (logs), set once its server listens
    python: str = sys.executable  # what "python" means for dir:// images
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    flashboot: KeeperConfig | None = None  # None: no FlashBoot keeper on this host
    # How loudly to say that T1 has 4 KiB pages: a warning on a GPU host, a note in `tide dev`.
    t1_advice_level: int = logging.WARNING
    report_dir: str = ""  # root of the per-worker report directories ("" = none)
    models: ModelCache | None = None  # the host tier of the model cache (None: endpoints' models ignored)
    # The worker gateway's base URL (noded/_gateway.py): workers' RUNPOD_WEBHOOK_* URLs point at
    # it instead of the replica that wrote them ("" = they stay as the coordinator wrote them).
    worker_gateway: str = ""
    bundle_dir: str = ""  # the host's code-bundle cache ("" = this host runs no bundles)
    bundle_base_image: str = ""  # what bundles run on under containerd
    # Suspended workers (issue 16): host RAM they may hold (0 = this host stops idle workers, and
    # says so to the coordinator), and how long a worker stays marked before it is frozen.
    suspend_budget_bytes: int = 0
    suspend_settle_s: float = 1.0


class NodeAgent:
    def __init__(
        self,
        client: CoordinatorClient,
        runtime: ContainerRuntime,
        gpus: GpuInventory,
        settings: AgentSettings,
    ) -> None:
        self._client = client
        self.runtime = runtime
        self._gpus = gpus
        self.settings = settings
        self.runners: dict[str, WorkerRunner] = {}
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._ready = asyncio.Event()
        self._kills: dict[str, asyncio.Task[None]] = {}  # worker id -> its stop under way
        self._kill_devices: dict[str, list[str]] = {}  # worker id -> the GPUs it is giving back
        self.draining = False
        self.mig = MigReconciler(gpus)  # cuts the cards the coordinator wants cut (noded/_mig.py)
        self._desired: list[DesiredWorker] = []
        fb = settings.flashboot
        self.flashboot = (
            FlashbootHost(fb, live_endpoints=self._live_endpoints, advice_level=settings.t1_advice_level)
            if fb
            else None
        )
        self.hook_host = HookHost(
            runtime=runtime.name,
            on_change=self._changed.set,
            report_root=settings.report_dir,
            flashboot=self.flashboot,
            gateway=settings.worker_gateway,
            bundles=BundleCache(settings.bundle_dir, client.bundle, python=settings.python)
            if settings.bundle_dir
            else None,
            bundle_base_image=settings.bundle_base_image,
            models=settings.models,
        )

    async def inventory(self) -> NodeInventory:
        gpus: list[GpuInfo] = mark_in_use(await self._gpus.list_gpus(), self._in_use())
        facts = host_facts()
        held = await self.flashboot.holdings() if self.flashboot else []
        return NodeInventory(
            hostname=self.settings.hostname,
            region=self.settings.region,
            datacenter=self.settings.datacenter,
            gpus=gpus,
            cpus=facts.cpus,
            memory_bytes=facts.memory_bytes,
            disk_bytes=facts.disk_bytes,
            runtime=self.runtime.name,
            version="0.1.0",
            mig_errors=dict(self.mig.errors),
            flashboot_models=[h.fingerprint for h in held],
            flashboot=held,
            suspend_budget_bytes=self.settings.suspend_budget_bytes
            if isinstance(self.runtime, Suspendable)
            else 0,
            models=sorted(m.id for m in self.settings.models.held()) if self.settings.models else [],
        )

    def _in_use(self) -> set[str]:
        """GPU and MIG uuids this host's workers hold: desired, running or being stopped."""
        frozen = {w for w, r in self.runners.items() if r.state == "suspended"}  # free capacity meanwhile
        held = {dev for d in self._desired if d.worker_id not in frozen for dev in d.devices}
        held.update(dev for w, r in self.runners.items() if w not in frozen for dev in r.spec.devices)
        held.update(dev for devs in self._kill_devices.values() for dev in devs)
        return held

    async def start(self) -> None:
        """Returns once registered and the first desired state has been applied."""
        if self.flashboot is not None:
            await self.flashboot.start()
        await self._client.register(await self.inventory(), self.settings.address)
        self._main = asyncio.create_task(self._supervise(), name=f"noded-{self.settings.hostname}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([ready, self._main], return_when=asyncio.FIRST_COMPLETED)
        if self._main.done():
            ready.cancel()
            self._main.result()

    async def _supervise(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._desired_loop(), name="desired")
                tg.create_task(self._heartbeat_loop(), name="heartbeat")
                if self.flashboot is not None:
                    tg.create_task(self.flashboot.run(), name="flashboot")
                await self._stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the agent; workers keep running (they are adopted on restart)."""
        for runner in self.runners.values():
            runner.detach()
        self._stopping.set()
        if self._main is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._main
        await self._client.close()

    async def _desired_loop(self) -> None:
        after = 0
        backoff = 0.5
        while True:
            try:
                desired = await self._client.desired(after)
            except TideError as exc:
                log.warning("desired workers: %s; retrying in %.1fs", exc.message, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            after = desired.revision
            self.draining = desired.drain
            await self._apply(desired.workers, desired.mig_layouts)
            self._ready.set()

    async def _apply(self, desired: list[DesiredWorker], mig: dict[str, list[str]] | None = None) -> None:
        # MIG first: slices exist before workers start on them; slices workers hold are never cut.
        self._desired = desired
        if mig is not None and await self.mig.reconcile(mig, self._in_use()):
            self._changed.set()  # the next heartbeat reports the new slices
        # Workers being stopped are out of the picture: their stop is already under way.
        observed = [o for o in await self.runtime.list() if o.id not in self._kills]
        plan = plan_workers(desired, observed, {w: r.revision for w, r in self.runners.items()})
        self._follow_suspended(desired, plan)
        if plan.empty:
            return
        log.info(
            "plan: start %d, adopt %d, replace %d, stop %d",
            len(plan.start),
            len(plan.adopt),
            len(plan.replace),
            len(plan.stop),
        )
        by_id = {o.id: o for o in observed}
        for wid in plan.stop:
            self._kill(wid)
        for d in plan.replace:
            self._kill(d.worker_id)
            self._run(d, None)  # starts once the old revision is stopped
        for d in plan.adopt:
            self._run(d, by_id.get(d.worker_id))
        for d in plan.start:
            self._run(d, None)
        self._changed.set()

    def _follow_suspended(self, desired: list[DesiredWorker], plan: WorkerPlan) -> None:
        """Hand each kept runner its DesiredWorker.suspended (new runners get it in ``_run``)."""
        replaced = {d.worker_id for d in plan.replace}
        for d in desired:
            runner = self.runners.get(d.worker_id)
            if runner is not None and d.worker_id not in replaced:
                runner.want_suspended(d.suspended)

    def _live_endpoints(self) -> set[str]:
        """Endpoints with a worker on this host (wanted, running or still stopping)."""
        return {r.endpoint_id for r in self.runners.values()} | {d.endpoint_id for d in self._desired}

    def _kill(self, worker_id: str) -> asyncio.Task[None]:
        """Stop a worker in the background: a slow stop (up to its grace) must not hold up
        the next desired state.  Idempotent: a kill already under way is returned."""
        assert self._tg is not None
        if worker_id in self._kills:
            return self._kills[worker_id]
        runner = self.runners.pop(worker_id, None)
        task = self._tg.create_task(self._stop_worker(worker_id, runner), name=f"kill-{worker_id}")
        self._kills[worker_id] = task
        self._kill_devices[worker_id] = list(runner.spec.devices) if runner else []
        return task

    async def _stop_worker(self, worker_id: str, runner: WorkerRunner | None) -> None:
        try:
            if runner is not None:
                await runner.kill()  # runs the worker's stop hooks, stopped or not
            else:
                await self._stop_leftover(worker_id)
        except TideError as exc:  # the next plan sees it still there and tries again
            log.warning("stopping worker %s: %s", worker_id, exc.message)
        finally:
            self._kills.pop(worker_id, None)
            self._kill_devices.pop(worker_id, None)

    async def _stop_leftover(self, worker_id: str) -> None:
        """A worker with no runner (an earlier noded's, not desired): its hooks clean up after it
        all the same; they know only its id."""
        try:
            with contextlib.suppress(NotFound):
                await self.runtime.stop(worker_id, grace=self.settings.stop_grace_s)
                await self.runtime.delete(worker_id)
        finally:
            leftover = DesiredWorker(worker_id=worker_id, endpoint_id="", revision=0, image="")
            await worker_hooks(self.hook_host, leftover).stop()

    def _run(self, d: DesiredWorker, adopted: WorkerStatus | None) -> None:
        """Start a runner; a new worker first waits for the stops of workers on its GPUs."""
        assert self._tg is not None
        runner = WorkerRunner(
            self.runtime,
            self._spec(d),
            endpoint_id=d.endpoint_id,
            revision=d.revision,
            on_change=self._changed.set,
            policy=self.settings.restart,
            stop_grace=self.settings.stop_grace_s,
            hooks=worker_hooks(self.hook_host, d),  # prestart: the spec's env and mounts from the hooks
            suspend_settle_s=self.settings.suspend_settle_s,
        )
        self.runners[d.worker_id] = runner
        runner.want_suspended(d.suspended)  # before run(): a fresh start of a suspended worker is not made
        if adopted is not None:
            runner.run(self._tg, adopted)
            return
        devices = set(d.devices)
        waits = [
            t for w, t in self._kills.items() if w == d.worker_id or devices & set(self._kill_devices[w])
        ]
        runner.run(self._tg, None, after=waits)

    def _spec(self, d: DesiredWorker) -> WorkerSpec:
        # An OCI image with no command runs its own Entrypoint/Cmd (the runtime applies them).
        command = list(d.command)
        if d.image.startswith("dir://"):
            if not command:
                command = [self.settings.python, "-u", "handler.py"]
            elif command[0] in ("python", "python3"):
                command[0] = self.settings.python
        return WorkerSpec(
            id=d.worker_id,
            image=d.image,
            command=command,
            args=list(d.args),
            env=dict(d.env),
            devices=list(d.devices),
            limits=ResourceLimits(cpus=d.cpus, memory_bytes=d.memory_bytes),
            labels={
                LABEL_OWNER: "tide",
                LABEL_WORKER: d.worker_id,
                LABEL_ENDPOINT: d.endpoint_id,
                LABEL_REVISION: str(d.revision),
            },
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            self._changed.clear()  # before reading: a change during the call wakes the next beat
            if self.mig.unsettled:  # a slice in the way may have been given back since
                await self.mig.reconcile(self.mig.layouts, self._in_use())
            try:
                beat = Heartbeat(
                    inventory=await self.inventory(),
                    workers=[r.report() for r in self.runners.values()],
                    draining=self.draining,
                )
                await self._client.heartbeat(beat, self.settings.address)
            except TideError as exc:
                log.warning("heartbeat failed: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_s):
                    await self._changed.wait()


class _Stopping(Exception):
    pass
