"""The hook contract: what a worker hook is, its phases, and what it may use of the host.

A hook is one concern of a worker's life (its report directory, FlashBoot, its boot report) with a
name and one job; it implements only the phases it needs (Nomad's task-runner hooks,
``client/allocrunner/interfaces/task_lifecycle.go``).  Each worker gets its own instances, made by
the factories of ``HOOKS`` (noded/hooks/_list.py), whose order is the order every phase runs in::

    runner made ──► prestart ──┬── fresh ──► prepare, precreate ──► create, start ──► poststart ─┐
      (once)                   │              ▲   (every start)               (beside   │
                               │              │                               the worker)│
                               │              └────────── exit: restart ◄────────────────┘
                               └── adopted ──────────────────────────────► poststart
    kill ──► stop, delete ──► stop (once)           heartbeat ──► report (every time)
    detach (noded shuts down, the worker runs on): no phase

Contracts, per phase:

* ``prestart``: once per runner, when noded takes the worker on (fresh or adopted), on the event
  loop while the plan is applied: cheap and synchronous.  Its env and mounts go into the spec
  every start of this worker creates (unlike Nomad's, it does not run again before a restart).
  An error fails the plan being applied, as any error building the spec does.
* ``prepare``: before every start (the first, each restart, each retry after a failed start),
  awaited before the runner takes its start lock, so a kill does not wait for it: it is
  cancelled.  For slow work a start needs (the model cache's fetch, a code bundle's fetch and
  its dependencies' install); idempotent and cheap once done.  An ``OSError`` or ``TideError``
  counts as a failed start (reported, retried with backoff; the worker's state says why).
* ``precreate``: before every create (the first, each restart, each retry after a failed start),
  under the runner's start lock.  An ``OSError`` or ``TideError`` counts as a failed start.
* ``poststart``: runs beside the worker from the runtime's start (or the adoption) until the
  worker exits, is killed or noded detaches, and is cancelled then.  It must not raise.
* ``report``: folds what the hook knows into the worker's report, on every heartbeat.  Cheap.
* ``stop``: once the worker is stopped for good, also when stopping it failed, and for a worker
  noded stops without a runner (a leftover: its hook knows only its id).  Idempotent; must not
  raise.

Phases of one worker never run concurrently with each other, except ``poststart`` (beside the
worker) with ``report``.  Hooks must be idempotent: a restarted noded runs them again for the
workers it adopts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from noded.runtime import Mount, WorkerSpec
from tide.api.nodes import DesiredWorker, WorkerReport

if TYPE_CHECKING:
    from noded._bundles import BundleCache
    from noded._flashboot import FlashbootHost
    from tiered_storage import ModelCache

__all__ = [
    "Hook",
    "HookFactory",
    "HookHost",
    "Poststart",
    "PoststartRequest",
    "Precreate",
    "Prepare",
    "Prestart",
    "PrestartRequest",
    "PrestartResponse",
    "Report",
    "Stop",
]


@dataclass(frozen=True, slots=True)
class HookHost:
    """What the hooks of every worker on this host share; the agent builds it once."""

    runtime: str  # the runtime's name ("process" | "containerd")
    on_change: Callable[[], None]  # a hook learnt something the next heartbeat should carry
    report_root: str = ""  # root of the per-worker report directories ("" = none)
    flashboot: FlashbootHost | None = None  # None: no FlashBoot keeper on this host
    bundles: BundleCache | None = None  # None: this host runs no code bundles
    bundle_base_image: str = ""  # the base OCI image bundles run on under containerd
    gateway: str = ""  # the worker gateway's base URL ("" = workers call a replica directly)
    models: ModelCache | None = None  # None: no model cache on this host

    def report_dir(self, worker_id: str) -> str:
        """The worker's own report directory, or "" when this host keeps none."""
        return os.path.join(self.report_root, worker_id) if self.report_root else ""

    def binds(self, paths: Iterable[str]) -> list[Mount]:
        """Host paths bound at the same path into containers; none for processes, which see the
        host's files anyway."""
        return [Mount(source=p, target=p) for p in paths] if self.runtime == "containerd" else []


class PrestartRequest(msgspec.Struct, frozen=True, kw_only=True):
    spec: WorkerSpec  # the spec so far: the desired worker's, plus what earlier hooks added


class PrestartResponse(msgspec.Struct, frozen=True, kw_only=True):
    env: dict[str, str] = {}  # over the spec's env (a later hook wins a clash)
    mounts: list[Mount] = []  # after the spec's mounts
    # What to run instead of the desired worker's image and command ("" / []: keep them); a
    # code bundle is run on a base this way (noded/hooks/_bundle.py).
    image: str = ""
    command: list[str] = []


class PoststartRequest(msgspec.Struct, frozen=True, kw_only=True):
    started_at: float  # when the runtime started the process (0.0: unknown, adopted)


class Hook(Protocol):
    name: str  # short, for logs


# A hook class (or any callable) that makes one worker's instance of the hook.
HookFactory = Callable[[HookHost, DesiredWorker], Hook]


@runtime_checkable
class Prestart(Hook, Protocol):
    def prestart(self, req: PrestartRequest) -> PrestartResponse: ...


@runtime_checkable
class Prepare(Hook, Protocol):
    async def prepare(self) -> None: ...


@runtime_checkable
class Precreate(Hook, Protocol):
    def precreate(self) -> None: ...


@runtime_checkable
class Poststart(Hook, Protocol):
    async def poststart(self, req: PoststartRequest) -> None: ...


@runtime_checkable
class Report(Hook, Protocol):
    def report(self, report: WorkerReport) -> WorkerReport: ...


@runtime_checkable
class Stop(Hook, Protocol):
    async def stop(self) -> None: ...
