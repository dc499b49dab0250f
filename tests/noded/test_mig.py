"""noded's MIG reconciler (noded/_mig.py) over simulated cards: incremental, idempotent across
restarts, and it refuses what is unsafe with a reason the heartbeat carries."""

from __future__ import annotations

import asyncio
from collections import Counter

from noded._mig import MigReconciler, mark_in_use, plan_mig
from noded.inventory import SimulatedGpus
from tide.api.errors import Unavailable
from tide.api.nodes import GpuInfo


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _gpus(gpus: SimulatedGpus) -> list[GpuInfo]:
    return asyncio.run(gpus.list_gpus())


def _profiles(gpu: GpuInfo) -> Counter[str]:
    return Counter(i.profile for i in gpu.mig_instances)


def test_layouts_are_applied_incrementally_and_idempotently() -> None:
    gpus = SimulatedGpus.from_spec("1xH100-80GB:mig,1xRTXPRO6000-96GB:mig,1xL40S-48GB", seed=3)
    h100, rtx, _ = _gpus(gpus)
    rec = MigReconciler(gpus)
    layouts = {h100.uuid: ["3g.40gb", "2g.20gb", "1g.10gb"], rtx.uuid: ["1g.24gb", "2g.48gb"]}
    assert _run(rec.reconcile(layouts, set())) is True
    assert rec.errors == {}
    h100, rtx, l40s = _gpus(gpus)
    assert _profiles(h100) == Counter(layouts[h100.uuid])
    assert _profiles(rtx) == Counter(layouts[rtx.uuid])
    assert all(i.uuid.startswith("MIG-") for i in h100.mig_instances + rtx.mig_instances)
    assert l40s.mig_instances == []  # no layout: untouched
    # Again, and from a restarted noded (a new reconciler on the same cards): nothing to do.
    assert plan_mig(_gpus(gpus), layouts, set()) == []
    before = [i.uuid for g in _gpus(gpus) for i in g.mig_instances]
    assert _run(MigReconciler(gpus).reconcile(layouts, set())) is False
    assert [i.uuid for g in _gpus(gpus) for i in g.mig_instances] == before
    # A new layout for the H100: the 3g stays (same UUID), the small ones make room for a 4g.
    three = next(i for i in h100.mig_instances if i.profile == "3g.40gb")
    _run(rec.reconcile({h100.uuid: ["3g.40gb", "4g.40gb"]}, set()))
    h100 = _gpus(gpus)[0]
    assert _profiles(h100) == Counter(["3g.40gb", "4g.40gb"])
    assert three in h100.mig_instances


def test_a_slice_a_worker_holds_is_never_destroyed_and_the_reason_is_reported() -> None:
    gpus = SimulatedGpus.from_spec("1xRTXPRO6000-96GB:mig", seed=1)
    card = _gpus(gpus)[0]
    rec = MigReconciler(gpus)
    _run(rec.reconcile({card.uuid: ["1g.24gb"]}, set()))
    slice_uuid = _gpus(gpus)[0].mig_instances[0].uuid
    # A worker runs on the 1g; the coordinator (or an operator) now wants the whole card as 4g.
    _run(rec.reconcile({card.uuid: ["4g.96gb"]}, {slice_uuid}))
    assert "1g.24gb" in rec.errors[card.uuid]
    assert rec.unsettled
    assert [i.uuid for i in _gpus(gpus)[0].mig_instances] == [slice_uuid]
    # The inventory shows the slice busy; once the worker is gone the cut goes through.
    shown = mark_in_use(_gpus(gpus), {slice_uuid})[0]
    assert shown.mig_instances[0].busy
    _run(rec.reconcile(rec.layouts, set()))
    assert rec.errors == {}
    assert _profiles(_gpus(gpus)[0]) == Counter(["4g.96gb"])


def test_a_process_on_a_slice_blocks_its_destruction_too() -> None:
    gpus = SimulatedGpus.from_spec("1xH100-80GB:mig", seed=2)
    card = _gpus(gpus)[0]
    rec = MigReconciler(gpus)
    _run(rec.reconcile({card.uuid: ["1g.10gb", "1g.10gb"]}, set()))
    victim = _gpus(gpus)[0].mig_instances[0]
    gpus.backend.attach_process(card.uuid, 4242, victim.uuid)  # NVML sees a process on it
    _run(rec.reconcile({card.uuid: ["7g.80gb"]}, set()))
    assert card.uuid in rec.errors
    assert victim.uuid in [i.uuid for i in _gpus(gpus)[0].mig_instances]
    gpus.backend.detach_process(card.uuid, 4242)
    _run(rec.reconcile(rec.layouts, set()))
    assert _profiles(_gpus(gpus)[0]) == Counter(["7g.80gb"])


def test_hopper_loses_mig_mode_on_reboot_and_noded_restores_the_layout() -> None:
    gpus = SimulatedGpus.from_spec("1xH100-80GB:mig", seed=4)
    card = _gpus(gpus)[0]
    layouts = {card.uuid: ["3g.40gb", "3g.40gb"]}
    _run(MigReconciler(gpus).reconcile(layouts, set()))
    gpus.backend.reboot()
    assert not _gpus(gpus)[0].mig_enabled
    rec = MigReconciler(gpus)  # noded restarts with the host
    assert _run(rec.reconcile(layouts, set())) is True
    card = _gpus(gpus)[0]
    assert card.mig_enabled and _profiles(card) == Counter(["3g.40gb", "3g.40gb"])


def test_unsafe_mode_changes_are_refused_with_a_reason() -> None:
    # Ampere with a process on the card: enabling MIG needs a reset, which waits.
    gpus = SimulatedGpus.from_spec("1xA100-80GB", seed=5)
    card = _gpus(gpus)[0]
    gpus.backend.attach_process(card.uuid, 77)
    rec = MigReconciler(gpus)
    _run(rec.reconcile({card.uuid: ["1g.10gb"]}, set()))
    assert "reset" in rec.errors[card.uuid]
    # A whole-GPU worker on a card that would have to enter MIG mode: refused before any call.
    hopper = SimulatedGpus.from_spec("1xH100-80GB", seed=6)
    whole = _gpus(hopper)[0]
    rec = MigReconciler(hopper)
    _run(rec.reconcile({whole.uuid: ["1g.10gb"]}, {whole.uuid}))
    assert "whole GPU" in rec.errors[whole.uuid]
    assert not _gpus(hopper)[0].mig_enabled
    # A card without a catalog, a GPU that is not here, a profile the card lacks, a layout
    # that cannot fit: each refused with its reason.
    mixed = SimulatedGpus.from_spec("1xL40S-48GB,1xH100-80GB:mig", seed=7)
    l40s, h100 = _gpus(mixed)
    rec = MigReconciler(mixed)
    wanted = {l40s.uuid: ["1g.10gb"], "GPU-gone": ["1g.10gb"], h100.uuid: ["7g.80gb", "1g.10gb"]}
    _run(rec.reconcile(wanted, set()))
    assert "cannot be partitioned" in rec.errors[l40s.uuid]
    assert "not on this host" in rec.errors["GPU-gone"]
    assert "cannot cut" in rec.errors[h100.uuid]
    _run(rec.reconcile({h100.uuid: ["5g.50gb"]}, set()))
    assert "5g.50gb" in rec.errors[h100.uuid]


def test_a_driver_error_midway_is_reported_and_the_next_pass_finishes_the_cut() -> None:
    gpus = SimulatedGpus.from_spec("1xH100-80GB:mig", seed=8)
    card = _gpus(gpus)[0]
    gpus.backend.fail_next("create_compute_instance", Unavailable("driver hiccup"))
    rec = MigReconciler(gpus)
    layouts = {card.uuid: ["2g.20gb", "1g.10gb"]}
    _run(rec.reconcile(layouts, set()))
    assert "driver hiccup" in rec.errors[card.uuid]
    _run(rec.reconcile(layouts, set()))
    assert rec.errors == {}
    card = _gpus(gpus)[0]
    assert _profiles(card) == Counter(layouts[card.uuid])
    assert all(i.uuid for i in card.mig_instances)
