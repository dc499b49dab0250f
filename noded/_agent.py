"""NodeAgent: tide-noded's core component.

register → (adopt what the runtime already runs) → loops:
  * desired:   long-poll the coordinator; on every answer, plan and apply;
  * heartbeat: inventory and worker reports, every few seconds and on change;
  * one WorkerRunner per worker (noded/_runner.py).

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

from noded._client import CoordinatorClient
from noded._runner import RestartPolicy, WorkerRunner
from noded.inventory import GpuInventory, host_facts
from noded.runtime import ContainerRuntime, WorkerSpec, WorkerStatus
from tide.api.errors import TideError
from tide.api.nodes import DesiredWorker, GpuInfo, Heartbeat, NodeInventory

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
    """Pure.  ``runners`` maps worker ids this agent already manages to their revision."""
    want = {d.worker_id: d for d in desired}
    seen = {o.id: o for o in observed}
    start: list[DesiredWorker] = []
    adopt: list[DesiredWorker] = []
    replace: list[DesiredWorker] = []
    for wid, d in sorted(want.items()):
        if wid in runners:
            if runners[wid] != d.revision:
                replace.append(d)
        elif wid in seen and seen[wid].state == "running":
            same = seen[wid].labels.get(LABEL_REVISION) == str(d.revision)
            (adopt if same else replace).append(d)
        else:
            start.append(d)
    stop = sorted((set(runners) | {o.id for o in observed if o.state != "exited"}) - set(want))
    plan = WorkerPlan(start=start, adopt=adopt, stop=stop, replace=replace)
    return plan


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
        self.draining = False

    async def inventory(self) -> NodeInventory:
        gpus: list[GpuInfo] = await self._gpus.list_gpus()
        facts = host_facts()
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
        )

    async def start(self) -> None:
        """Returns once registered and the first desired state has been applied."""
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
            await self._apply(desired.workers)
            self._ready.set()

    async def _apply(self, desired: list[DesiredWorker]) -> None:
        observed = await self.runtime.list()
        plan = plan_workers(desired, observed, {w: r.revision for w, r in self.runners.items()})
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
            await self._kill(wid)
        for d in plan.replace:
            await self._kill(d.worker_id)
            self._run(d, None)
        for d in plan.adopt:
            self._run(d, by_id.get(d.worker_id))
        for d in plan.start:
            self._run(d, None)
        self._changed.set()

    async def _kill(self, worker_id: str) -> None:
        runner = self.runners.pop(worker_id, None)
        if runner is not None:
            await runner.kill()
        else:
            with contextlib.suppress(TideError):
                await self.runtime.stop(worker_id, grace=self.settings.stop_grace_s)
                await self.runtime.delete(worker_id)

    def _run(self, d: DesiredWorker, adopted: WorkerStatus | None) -> None:
        assert self._tg is not None
        runner = WorkerRunner(
            self.runtime,
            self._spec(d),
            endpoint_id=d.endpoint_id,
            revision=d.revision,
            on_change=self._changed.set,
            policy=self.settings.restart,
            stop_grace=self.settings.stop_grace_s,
        )
        self.runners[d.worker_id] = runner
        runner.run(self._tg, adopted)

    def _spec(self, d: DesiredWorker) -> WorkerSpec:
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
            labels={
                LABEL_OWNER: "tide",
                LABEL_WORKER: d.worker_id,
                LABEL_ENDPOINT: d.endpoint_id,
                LABEL_REVISION: str(d.revision),
            },
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                beat = Heartbeat(
                    inventory=await self.inventory(),
                    workers=[r.report() for r in self.runners.values()],
                    draining=self.draining,
                )
                await self._client.heartbeat(beat, self.settings.address)
            except TideError as exc:
                log.warning("heartbeat failed: %s", exc.message)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_s):
                    await self._changed.wait()


class _Stopping(Exception):
    pass
