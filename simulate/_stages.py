"""The cold-start stage model: how long a new worker takes before it can take a job.

A worker's start is the sum of the stages ARCHITECTURE.md's cold-start table names, with the
weight restore taken from the nearest tier that holds the endpoint's weights on the chosen host:
``t1`` (pinned RAM: a worker of the endpoint ran there within ``t1_keep_s``), ``t2`` (local
NVMe: one ran there earlier) or ``source`` (never on this host).  The defaults are round figures
for a ~1 GiB model on a pooled process runtime, in line with what ``bench/coldstart.py`` prints
on a development machine; measure your own with it and set them in the fleet file's
``[stages]`` table (docs/simulate.md).  ``recut_s`` is how long noded takes to apply a new MIG
layout on a card (destroy idle instances, create the new ones).
"""

from __future__ import annotations

import msgspec

__all__ = ["StageModel"]


class StageModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    placement_s: float = 0.2  # assignment written -> noded sees it (a long-poll answer)
    process_start_s: float = 0.3  # a fork from the prewarm pool
    runtime_import_s: float = 1.5  # the handler's imports
    weight_t1_s: float = 0.4  # restore from pinned RAM
    weight_t2_s: float = 1.5  # restore from local NVMe
    weight_source_s: float = 12.0  # download and deserialize
    handler_ready_s: float = 0.5  # warm-up until the first job-take
    t1_keep_s: float = 1800.0  # weights stay in RAM this long after the last worker stopped
    recut_s: float = 2.0  # noded applies a MIG layout

    def cold_start_s(self, tier: str) -> float:
        weight = {"t1": self.weight_t1_s, "t2": self.weight_t2_s}.get(tier, self.weight_source_s)
        fixed = self.placement_s + self.process_start_s + self.runtime_import_s + self.handler_ready_s
        return fixed + weight
