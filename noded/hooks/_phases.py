"""How a runner runs its worker's hooks: each phase over the hooks that implement it, in order
(Nomad's ``task_runner_hooks.go``).  The runner calls these and knows nothing of any hook."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import final

import msgspec

from noded.hooks._protocol import (
    Hook,
    Poststart,
    PoststartRequest,
    Precreate,
    Prepare,
    Prestart,
    PrestartRequest,
    Report,
    Stop,
)
from noded.runtime import WorkerSpec
from tide.api.nodes import WorkerReport

__all__ = ["WorkerHooks"]


@final
class WorkerHooks:
    """One worker's hooks, in the order their phases run (none: a runner with no hooks)."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.hooks = tuple(hooks)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hooks]

    def prestart(self, spec: WorkerSpec) -> WorkerSpec:
        """``spec`` with every prestart hook's env and mounts added, in order (and its image and
        command, for a hook that names them)."""
        for hook in self.hooks:
            if isinstance(hook, Prestart):
                got = hook.prestart(PrestartRequest(spec=spec))
                if got.env or got.mounts:
                    spec = msgspec.structs.replace(
                        spec, env={**spec.env, **got.env}, mounts=[*spec.mounts, *got.mounts]
                    )
                if got.image or got.command:
                    spec = msgspec.structs.replace(
                        spec, image=got.image or spec.image, command=got.command or spec.command
                    )
        return spec

    async def prepare(self) -> None:
        for hook in self.hooks:
            if isinstance(hook, Prepare):
                await hook.prepare()

    def precreate(self) -> None:
        for hook in self.hooks:
            if isinstance(hook, Precreate):
                hook.precreate()

    async def poststart(self, req: PoststartRequest) -> None:
        """Run every poststart hook beside the others until each returns (or all are cancelled)."""
        watching = [h for h in self.hooks if isinstance(h, Poststart)]
        if not watching:
            return
        async with asyncio.TaskGroup() as tg:
            for hook in watching:
                tg.create_task(hook.poststart(req), name=f"hook-{hook.name}")

    def report(self, report: WorkerReport) -> WorkerReport:
        for hook in self.hooks:
            if isinstance(hook, Report):
                report = hook.report(report)
        return report

    async def stop(self) -> None:
        for hook in self.hooks:
            if isinstance(hook, Stop):
                await hook.stop()
