"""Turn desired worker counts into which workers to add and which to remove.

Nomad's ``diffAllocs`` idea at the endpoint level: the leader knows the
workers each endpoint has (assigned, starting or running) and how many it
wants (the autoscaler's ``desired``); :func:`plan_reconcile` names the ids to
remove and mints ids (from the caller's supply) for the ones to add.  Placing
the added ones is :func:`plan_placement`'s job.

The plan is a fixed point: applying it (drop ``remove``, add ``add``) and
planning again with the same inputs yields an empty plan.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

from tide.api.errors import InvalidArgument

__all__ = ["CurrentWorker", "ReconcilePlan", "plan_reconcile"]


class CurrentWorker(msgspec.Struct, frozen=True, kw_only=True):
    worker_id: str
    endpoint_id: str


class ReconcilePlan(msgspec.Struct, frozen=True, kw_only=True):
    add: dict[str, list[str]] = {}  # endpoint id -> new worker ids, to place
    remove: list[str] = []  # worker ids to stop and forget

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan_reconcile(
    *,
    current: Sequence[CurrentWorker],
    desired: Mapping[str, int],
    new_ids: Iterable[str],
    stop: Collection[str] = (),
) -> ReconcilePlan:
    """Which workers to add and remove so each endpoint has ``desired[endpoint]`` workers.

    * ``stop`` names workers that must go whatever the counts (the autoscaler's
      stop list: idle-timed-out and broken workers; workers on lost hosts).
      They are removed and do not count toward the endpoint's workers.
    * Workers of endpoints missing from ``desired`` (deleted) are removed.
    * Over the count, the newest workers (last in ``current``) are removed
      first: they are the likeliest still to be starting.
    * Under the count, ids are drawn from ``new_ids`` in sorted endpoint order.

    Pure.  Raises ``InvalidArgument`` for a negative count, too few new ids,
    or a new id that is already a worker's.
    """
    kept: dict[str, list[str]] = {}
    remove: list[str] = []
    for w in current:
        if w.worker_id in stop or w.endpoint_id not in desired:
            remove.append(w.worker_id)
        else:
            kept.setdefault(w.endpoint_id, []).append(w.worker_id)
    supply = iter(new_ids)
    taken = {w.worker_id for w in current}
    add: dict[str, list[str]] = {}
    for endpoint_id in sorted(desired):
        want = desired[endpoint_id]
        if want < 0:
            raise InvalidArgument(f"desired workers for {endpoint_id} is {want}; it must be >= 0")
        have = kept.get(endpoint_id, [])
        if len(have) > want:
            remove.extend(reversed(have[want:]))
        elif len(have) < want:
            add[endpoint_id] = _draw(supply, want - len(have), taken, endpoint_id)
    return ReconcilePlan(add=add, remove=remove)


def _draw(supply: Iterable[str], n: int, taken: set[str], endpoint_id: str) -> list[str]:
    ids: list[str] = []
    for worker_id in supply:
        if worker_id in taken:
            raise InvalidArgument(f"new worker id {worker_id!r} is already in use")
        taken.add(worker_id)
        ids.append(worker_id)
        if len(ids) == n:
            return ids
    raise InvalidArgument(f"ran out of new worker ids: {endpoint_id} needs {n}, got {len(ids)}")
