"""Suspended workers (issue 16): which idle workers to freeze, resume or drop.

When the autoscaler scales an endpoint down, an *idle* worker on a host that
keeps a suspend budget is not removed but marked suspended: noded freezes it in
place (same pid, its memory kept; its device memory moved to host RAM where
cuda-checkpoint allows) and its GPU or slice is free capacity meanwhile.  A
suspended worker is not billed and not counted by the autoscaler.

:func:`plan_suspend` runs after the reconciler, before the placer:

1. **Drop** suspended workers whose endpoint is gone or changed version, whose
   host is gone, lost, draining or keeps no budget, that are older than the
   TTL, or that noded reports exited (killed while frozen).
2. **Resume** before placing: an endpoint that needs workers takes its own
   suspended ones (same version, most recently suspended first) whose devices
   no running worker holds; each resume is one fresh placement fewer.
3. **Suspend** the idle workers the reconciler removed, on hosts with a budget.
4. **Budget**: per host, while the suspended workers' reported RAM exceeds the
   budget, the oldest suspended is dropped.

After the placer, :func:`plan_evictions` drops every suspended worker whose
device a new assignment took: it could not resume while its GPU is taken.

Pure: time, ids and the reports are inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

__all__ = [
    "DEFAULT_SUSPEND",
    "SuspendCandidate",
    "SuspendPlan",
    "SuspendSettings",
    "SuspendedWorker",
    "plan_evictions",
    "plan_suspend",
]


class SuspendSettings(msgspec.Struct, frozen=True, kw_only=True):
    ttl_s: float = 3600.0  # a worker suspended longer than this is stopped
    enabled: bool = True  # False: scale-down removes workers (the behaviour before issue 16)


DEFAULT_SUSPEND = SuspendSettings()


class SuspendCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """A worker the reconciler removes that is idle: no claim, reported idle, host healthy."""

    worker_id: str
    endpoint_id: str
    node_id: str


class SuspendedWorker(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str
    node_id: str
    devices: list[str] = []
    version: int = 0  # the endpoint version it was suspended at
    suspended_at: float = 0.0
    rss_bytes: int = 0  # host RAM noded reports it holds
    exited: bool = False  # noded reports it gone (killed while frozen)


class SuspendPlan(msgspec.Struct, frozen=True, kw_only=True):
    suspend: list[str] = []  # mark suspended (instead of removing them)
    resume: list[str] = []  # flip back to running (instead of a fresh placement)
    drop: list[str] = []  # suspended workers to remove
    add: dict[str, int] = {}  # endpoint -> fresh workers still to place after the resumes

    @property
    def empty(self) -> bool:
        return not (self.suspend or self.resume or self.drop)


def plan_suspend(
    *,
    candidates: Sequence[SuspendCandidate],
    suspended: Sequence[SuspendedWorker],
    want: Mapping[str, int],
    versions: Mapping[str, int],
    budgets: Mapping[str, int],
    busy_devices: Mapping[str, Collection[str]],
    now: float,
    settings: SuspendSettings = DEFAULT_SUSPEND,
) -> SuspendPlan:
    """``want``: fresh workers each endpoint needs (the reconciler's adds); ``versions``: the
    live endpoints' versions; ``budgets``: suspend RAM per healthy host (absent or 0 = this host
    does not suspend); ``busy_devices``: per host, devices that running workers keep."""
    drop = [s.worker_id for s in suspended if _stale(s, versions, budgets, now, settings)]
    kept = [s for s in suspended if s.worker_id not in drop]
    resume, add = _resumes(kept, want, versions, busy_devices)
    still = [s for s in kept if s.worker_id not in resume]
    drop += _over_budget(still, budgets)
    suspend = [c.worker_id for c in candidates if settings.enabled and budgets.get(c.node_id, 0) > 0]
    return SuspendPlan(suspend=suspend, resume=resume, drop=drop, add=add)


def _stale(
    s: SuspendedWorker,
    versions: Mapping[str, int],
    budgets: Mapping[str, int],
    now: float,
    settings: SuspendSettings,
) -> bool:
    return (
        s.exited
        or versions.get(s.endpoint_id) != s.version
        or budgets.get(s.node_id, 0) <= 0
        or now - s.suspended_at >= settings.ttl_s
    )


def _resumes(
    kept: Sequence[SuspendedWorker],
    want: Mapping[str, int],
    versions: Mapping[str, int],
    busy_devices: Mapping[str, Collection[str]],
) -> tuple[list[str], dict[str, int]]:
    busy = {node: set(devs) for node, devs in busy_devices.items()}
    resume: list[str] = []
    add: dict[str, int] = {}
    # Most recently suspended first: the warmest, and the last to be dropped for RAM anyway.
    newest = sorted(kept, key=lambda s: (-s.suspended_at, s.worker_id))
    for ep in sorted(want):
        need = want[ep]
        for s in newest:
            if need <= 0:
                break
            if s.endpoint_id != ep or versions.get(ep) != s.version:
                continue
            held = busy.setdefault(s.node_id, set())
            if held & set(s.devices):
                continue  # its GPU is taken: it stays suspended
            held.update(s.devices)
            resume.append(s.worker_id)
            need -= 1
        if need > 0:
            add[ep] = need
    return resume, add


def _over_budget(still: Sequence[SuspendedWorker], budgets: Mapping[str, int]) -> list[str]:
    drop: list[str] = []
    by_node: dict[str, list[SuspendedWorker]] = {}
    for s in still:
        by_node.setdefault(s.node_id, []).append(s)
    for node, workers in sorted(by_node.items()):
        total = sum(s.rss_bytes for s in workers)
        for s in sorted(workers, key=lambda s: (s.suspended_at, s.worker_id)):  # oldest first
            if total <= budgets.get(node, 0):
                break
            drop.append(s.worker_id)
            total -= s.rss_bytes
    return drop


def plan_evictions(suspended: Iterable[SuspendedWorker], placed: Mapping[str, Collection[str]]) -> list[str]:
    """Suspended workers whose device a new assignment (``placed``: host -> devices) took."""
    return sorted(s.worker_id for s in suspended if set(s.devices) & set(placed.get(s.node_id, ())))
