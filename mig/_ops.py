"""Whole-instance operations over any MigBackend: GPU instance + its compute instance as one unit.

A Tide MIG instance is one GPU instance holding one full-size compute instance, i.e. one MIG
device with one UUID.  These helpers compose the backend's primitives in the order NVML requires
(create GI then CI; destroy CIs then GI) and re-read state after every change.  All are blocking.
"""

from __future__ import annotations

import contextlib

from mig._backend import MigBackend
from mig._catalog import Catalog, catalog_for_name, load_catalog
from mig._planner import Transition
from tide.api.errors import FailedPrecondition, NotFound, TideError
from tide.api.nodes import MigInstance

__all__ = ["apply_transition", "create_instance", "destroy_instance", "list_instances"]


def _catalog(backend: MigBackend, gpu: str) -> Catalog | None:
    for dev in backend.list_gpus():
        if dev.uuid == gpu and (type_id := catalog_for_name(dev.name)) is not None:
            return load_catalog(type_id)
    return None


def _name(catalog: Catalog | None, profile_id: int, driver_name: str) -> str:
    # Driver profile names drift between releases ("3g.39gb" for "3g.40gb" on R535/R545,
    # mig-parted#31); the profile ID does not, so name instances as the catalog does.
    if catalog is not None and any(p.profile_id == profile_id for p in catalog.profiles):
        return catalog.profile_by_id(profile_id).name
    return driver_name


def list_instances(backend: MigBackend, gpu: str) -> list[MigInstance]:
    """The card's MIG instances by placement start; ``busy`` when a process runs on one.

    Profiles are named as the card's catalog names them.  A GPU instance without a compute
    instance (a create cut short) appears with an empty UUID.
    """
    catalog = _catalog(backend, gpu)
    devices = {d.gi_id: d for d in backend.list_mig_devices(gpu)}
    out = []
    for gi in backend.list_gpu_instances(gpu):
        dev = devices.get(gi.gi_id)
        out.append(
            MigInstance(
                uuid=dev.uuid if dev else "",
                profile=_name(catalog, gi.profile_id, gi.profile),
                start=gi.placement.start,
                size=gi.placement.size,
                gpu_instance_id=gi.gi_id,
                compute_instance_id=dev.ci_id if dev else 0,
                busy=bool(dev and dev.pids),
            )
        )
    return sorted(out, key=lambda i: i.start)


def _profile_id(backend: MigBackend, gpu: str, profile: str) -> int:
    for p in backend.gi_profiles(gpu):
        if p.name == profile:
            return p.profile_id
    catalog = _catalog(backend, gpu)
    if catalog is not None and catalog.has_profile(profile):
        return catalog.profile(profile).profile_id  # the driver names it differently
    raise NotFound(f"GPU {gpu} offers no MIG profile {profile!r}")


def create_instance(backend: MigBackend, gpu: str, profile: str, start: int) -> MigInstance:
    """Create ``profile`` at ``start`` with its compute instance; undo the GI if the CI fails."""
    gi = backend.create_gpu_instance(gpu, _profile_id(backend, gpu, profile), start)
    try:
        ci = backend.create_compute_instance(gpu, gi.gi_id)
    except BaseException:
        with contextlib.suppress(TideError):  # keep the original error; apply_transition repairs
            backend.destroy_gpu_instance(gpu, gi.gi_id)
        raise
    for inst in list_instances(backend, gpu):
        if inst.gpu_instance_id == gi.gi_id and inst.compute_instance_id == ci.ci_id:
            return inst
    raise NotFound(f"MIG instance {profile} at {start} vanished right after creation on {gpu}")


def destroy_instance(backend: MigBackend, gpu: str, gi_id: int) -> None:
    """Destroy a GPU instance and its compute instances (FailedPrecondition if a process runs)."""
    for ci in backend.list_compute_instances(gpu, gi_id):
        backend.destroy_compute_instance(gpu, gi_id, ci.ci_id)
    backend.destroy_gpu_instance(gpu, gi_id)


def apply_transition(backend: MigBackend, gpu: str, transition: Transition) -> list[MigInstance]:
    """Carry out a planned transition on one card and return the instances read back.

    Idempotent: instances already destroyed or created are skipped, so a transition cut short
    can be applied again.  Busy-ness is checked again here, because a worker may have started on
    an instance since the plan was made (FailedPrecondition, nothing further is changed).
    """
    live = {(i.profile, i.start): i for i in list_instances(backend, gpu)}
    doomed = [live[(s.profile, s.start)] for s in transition.destroy if (s.profile, s.start) in live]
    if busy := [i for i in doomed if i.busy]:
        names = ", ".join(f"{i.profile} at {i.start} ({i.uuid})" for i in busy)
        raise FailedPrecondition(f"cannot destroy busy MIG instances on {gpu}: {names}")
    for inst in doomed:
        destroy_instance(backend, gpu, inst.gpu_instance_id)
    for inst in live.values():
        if not inst.uuid and inst not in doomed:
            # A GPU instance left without its compute instance by a create cut short: finish it.
            backend.create_compute_instance(gpu, inst.gpu_instance_id)
    for slot in transition.create:
        if (slot.profile, slot.start) not in live:
            create_instance(backend, gpu, slot.profile, slot.start)
    return list_instances(backend, gpu)
