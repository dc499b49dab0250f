"""The MIG side of one scheduling pass: the slice fitter over the view's layouts, and the
layout writes for the plan's transaction (the pure fitter is coordinator/scheduling's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from coordinator._node_schema import MigLayoutRecord, nkeys
from coordinator._schema import encode
from coordinator.scheduling import MigSliceFitter, PlacementPlan
from coordinator.store import Put
from coordinator.view import ClusterView
from tide.api.nodes import GpuInfo

__all__ = ["MigPass"]


class MigPass:
    """The MIG side of one scheduling pass: the fitter, what to withhold, what to write.

    Built from the view at the start of a pass; :meth:`withheld` feeds the placer's snapshot,
    :attr:`fitter` the placer, and :meth:`ops` turns the plan's re-cuts into layout writes for
    the plan's own guarded transaction.  ``written``: layouts by GPU uuid stored earlier in the
    pass (ahead-of-time re-cuts) that the view may not show yet; they count as stored.
    """

    def __init__(
        self,
        view: ClusterView,
        *,
        now: float,
        min_interval_s: float,
        written: Mapping[str, MigLayoutRecord] | None = None,
    ) -> None:
        self.now = now
        self.layouts = {gpu: rec for cards in view.mig_layouts.values() for gpu, (rec, _) in cards.items()}
        self.layouts.update(written or {})
        errors = {gpu: why for rec, _ in view.nodes.values() for gpu, why in rec.inventory.mig_errors.items()}
        self.fitter = MigSliceFitter(
            layouts=self.layouts, errors=errors, now=now, min_interval_s=min_interval_s
        )

    def withheld(self, gpus: list[GpuInfo]) -> list[str]:
        """Instances no worker may get now: every instance of a card whose re-cut is pending
        (it may be destroyed; a worker on it would block the cut)."""
        return [i.uuid for g in gpus if self.fitter.state(g) == "pending" for i in g.mig_instances]

    def ops(self, plan: PlacementPlan) -> list[Put]:
        """One layout write per re-cut card whose wanted layout changes (a re-proposed pending
        layout writes nothing, so it keeps its time for the hysteresis)."""
        out: list[Put] = []
        for recut in plan.recuts:
            profiles = self.fitter.proposals.get(recut.gpu_uuid)
            old = self.layouts.get(recut.gpu_uuid)
            if profiles is None or (old is not None and Counter(old.profiles) == Counter(profiles)):
                continue
            record = MigLayoutRecord(
                node_id=recut.node_id,
                gpu_uuid=recut.gpu_uuid,
                profiles=sorted(profiles),
                written_at=self.now,
                reason=f"endpoint {recut.endpoint_id} needs a {recut.profile}",
            )
            out.append(Put(key=nkeys.mig_layout(recut.node_id, recut.gpu_uuid), value=encode(record)))
        return out

    @staticmethod
    def reasons(plan: PlacementPlan) -> dict[str, str]:
        """Why workers waiting for a re-cut are not placed yet, per endpoint."""
        return {
            r.endpoint_id: f"waiting for GPU {r.gpu_uuid} on {r.node_id} to be re-cut for a {r.profile} slice"
            for r in plan.recuts
        }
