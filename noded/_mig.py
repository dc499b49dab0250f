"""noded's MIG reconciler: make each managed card hold the layout the coordinator wants.

The coordinator sends a wanted profile multiset per GPU (``DesiredWorkers.mig_layouts``); a card
without one is left alone.  Reconciling is incremental and safe (reference/mig.md §9):

* :func:`plan_mig` (pure) turns live cards, wanted layouts and the instances workers use into
  steps: enable MIG mode on a card that lost it (Hopper+ forgets it on reboot), or a
  transition from mig/'s planner that destroys only idle instances and creates the rest at
  explicit placements; or a refusal with the reason (a busy slice in the way, a whole-GPU worker
  on a card that would have to enter MIG mode, a layout that cannot fit).
* :class:`MigReconciler` applies the steps through the inventory's MigBackend in a worker
  thread, one card change at a time, re-reading after each, and keeps the refusals and errors
  for the heartbeat (``NodeInventory.mig_errors``).  Idempotent: after a restart the same
  desired layouts yield no changes, or finish a change that was cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping, Sequence

import msgspec

from mig import Layout, MigBackend, Transition, apply_transition, load_catalog, plan_layout, plan_transition
from noded.inventory import GpuInventory, MigBackendGpus
from tide.api.errors import FailedPrecondition, TideError
from tide.api.nodes import GpuInfo, MigInstance

__all__ = ["MigReconciler", "MigStep", "mark_in_use", "plan_mig"]

log = logging.getLogger("tide.noded.mig")


class MigStep(msgspec.Struct, frozen=True, kw_only=True):
    """What to do to one card: exactly one of ``enable``, ``transition``, ``refusal``."""

    gpu_uuid: str
    enable: bool = False  # turn MIG mode on first; plan the card again afterwards
    transition: Transition | None = None
    refusal: str = ""


def _held(gpu: GpuInfo, in_use: Collection[str]) -> list[MigInstance]:
    return [i for i in gpu.mig_instances if i.busy or i.uuid in in_use]


def _plan_card(gpu: GpuInfo, wanted: Sequence[str], in_use: Collection[str]) -> MigStep | None:
    uuid = gpu.uuid
    if not gpu.mig_capable:
        return MigStep(gpu_uuid=uuid, refusal=f"{gpu.type_id} {uuid} cannot be partitioned (no MIG catalog)")
    if not gpu.mig_enabled:
        if uuid in in_use:
            reason = f"MIG mode is off on {uuid} and a worker uses the whole GPU: stop it first"
            return MigStep(gpu_uuid=uuid, refusal=reason)
        return MigStep(gpu_uuid=uuid, enable=True)
    catalog = load_catalog(gpu.type_id)
    held = _held(gpu, in_use)
    try:
        layout = plan_layout(catalog, gpu.mig_instances, list(wanted), busy=held)
    except TideError as exc:  # a profile the card does not have
        return MigStep(gpu_uuid=uuid, refusal=exc.message)
    if not isinstance(layout, Layout):
        return MigStep(gpu_uuid=uuid, refusal=f"cannot cut {uuid} into {sorted(wanted)}: {layout.reason}")
    step = plan_transition(gpu.mig_instances, layout, busy=held)
    if not isinstance(step, Transition):
        return MigStep(gpu_uuid=uuid, refusal=step.reason)
    if step.empty and all(i.uuid for i in gpu.mig_instances):
        return None
    return MigStep(gpu_uuid=uuid, transition=step)  # empty: repairs a GI left without its CI


def plan_mig(
    gpus: Sequence[GpuInfo], layouts: Mapping[str, Sequence[str]], in_use: Collection[str]
) -> list[MigStep]:
    """The steps that bring every card named in ``layouts`` to its wanted profiles.  Pure.

    ``in_use``: GPU and MIG uuids workers on this host hold (running, starting, stopping or
    desired); together with instances whose ``busy`` flag is set (a process runs on them)
    they are never destroyed.  Cards already holding their layout yield no step.
    """
    by_uuid = {g.uuid: g for g in gpus}
    steps: list[MigStep] = []
    for uuid, wanted in sorted(layouts.items()):
        gpu = by_uuid.get(uuid)
        if gpu is None:
            steps.append(MigStep(gpu_uuid=uuid, refusal=f"GPU {uuid} is not on this host (lost?)"))
        elif (step := _plan_card(gpu, wanted, in_use)) is not None:
            steps.append(step)
    return steps


def mark_in_use(gpus: Sequence[GpuInfo], in_use: Collection[str]) -> list[GpuInfo]:
    """The inventory with instances that workers hold marked ``busy`` (NVML only sees processes)."""
    out = []
    for g in gpus:
        if any(i.uuid in in_use and not i.busy for i in g.mig_instances):
            insts = [msgspec.structs.replace(i, busy=i.busy or i.uuid in in_use) for i in g.mig_instances]
            g = msgspec.structs.replace(g, mig_instances=insts)
        out.append(g)
    return out


def _apply_step(backend: MigBackend, step: MigStep) -> None:
    """Blocking: one card's step through the backend."""
    if step.enable:
        mode = backend.set_mig_mode(step.gpu_uuid, True)
        if mode.reset_needed:
            raise FailedPrecondition(
                f"MIG mode on {step.gpu_uuid} waits for a GPU reset ({mode.activation}): "
                "stop every process on the card, or reboot a pass-through VM"
            )
    elif step.transition is not None:
        apply_transition(backend, step.gpu_uuid, step.transition)


class MigReconciler:
    """Applies wanted MIG layouts on this host.  ``reconcile`` calls are serialised.

    ``errors`` (GPU uuid -> reason) is what the heartbeat reports; ``unsettled`` says a later
    call may get further (a slice was busy, an operation failed).
    """

    def __init__(self, gpus: GpuInventory) -> None:
        self._gpus = gpus
        self._backend: MigBackend | None = gpus.backend if isinstance(gpus, MigBackendGpus) else None
        self._lock = asyncio.Lock()
        self.layouts: dict[str, list[str]] = {}
        self.errors: dict[str, str] = {}

    @property
    def unsettled(self) -> bool:
        return bool(self.errors)

    async def reconcile(self, layouts: Mapping[str, Sequence[str]], in_use: Collection[str]) -> bool:
        """Bring the cards to ``layouts`` as far as is safe now; never raises a TideError.

        True when something changed that the inventory shows (instances, mode, errors).
        """
        async with self._lock:
            self.layouts = {k: list(v) for k, v in layouts.items()}
            errors: dict[str, str] = {}
            changed = False
            for _ in range(3):  # enabling MIG mode needs a second plan for the same card
                errors, applied, again = await self._round(in_use)
                changed = changed or applied
                if not again:
                    break
            changed = changed or errors != self.errors
            self.errors = errors
            return changed

    async def _round(self, in_use: Collection[str]) -> tuple[dict[str, str], bool, bool]:
        """One plan-and-apply pass: (errors, whether anything was applied, whether to plan again)."""
        if not self.layouts:
            return {}, False, False
        try:
            steps = plan_mig(await self._gpus.list_gpus(), self.layouts, in_use)
        except TideError as exc:
            return {uuid: f"reading MIG state: {exc.message}" for uuid in self.layouts}, False, False
        errors = {s.gpu_uuid: s.refusal for s in steps if s.refusal}
        todo = [s for s in steps if not s.refusal]
        if todo and self._backend is None:
            return (
                errors | {s.gpu_uuid: "this host's GPU inventory cannot change MIG" for s in todo},
                False,
                False,
            )
        for step in todo:
            assert self._backend is not None
            try:
                await asyncio.to_thread(_apply_step, self._backend, step)
                log.info("MIG %s: %s", step.gpu_uuid, "enabled" if step.enable else _describe(step))
            except TideError as exc:
                log.warning("MIG change on %s refused: %s", step.gpu_uuid, exc.message)
                errors[step.gpu_uuid] = exc.message
        applied = any(s.gpu_uuid not in errors for s in todo)
        return errors, applied, any(s.enable and s.gpu_uuid not in errors for s in todo)


def _describe(step: MigStep) -> str:
    t = step.transition or Transition()
    gone = ", ".join(f"{s.profile}@{s.start}" for s in t.destroy) or "nothing"
    made = ", ".join(f"{s.profile}@{s.start}" for s in t.create) or "nothing"
    return f"destroyed {gone}; created {made}"
