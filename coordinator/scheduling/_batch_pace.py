"""How many workers a batch may use now: the pacing decision, pure.

Batch work lives on what real-time traffic leaves free.  The planner starts from the spare
capacity (the endpoint's allowance, ``workersMax`` plus the operator's batch allowance, less
what real-time jobs hold or wait for) and speeds up past it only when the SLA is at risk:
the rate needed to finish on time is the remaining requests times the measured time per
request over the time left.  A need above everything the operator allows is said at once
(``at_risk``), not at the deadline.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["BatchPace", "PaceInput", "plan_batch_pace"]


class PaceInput(msgspec.Struct, frozen=True, kw_only=True):
    remaining: int  # requests not yet done
    time_left_s: float  # to the SLA's deadline; math.inf without one
    per_request_s: float  # measured (or assumed) wall seconds per request on one worker
    workers_max: int  # the endpoint's workersMax
    allowance: int  # extra workers the operator lets batches use beyond workersMax
    realtime_busy: int  # workers running real-time jobs
    realtime_queued: int  # real-time jobs waiting


class BatchPace(msgspec.Struct, frozen=True, kw_only=True):
    workers: int
    needed: int  # workers needed to finish by the deadline
    at_risk: str = ""  # why the deadline will be missed even at the cap ("" = on track)


def plan_batch_pace(p: PaceInput) -> BatchPace:
    if p.remaining <= 0:
        return BatchPace(workers=0, needed=0)
    cap = max(1, p.workers_max + p.allowance)
    spare = max(0, cap - p.realtime_busy - p.realtime_queued)
    needed = _needed(p)
    # Spare capacity is used freely; beyond it only what the deadline needs (it takes
    # workers real-time traffic would use, so only when the SLA asks for them).
    workers = min(cap, max(spare, needed, 1), p.remaining)
    return BatchPace(workers=workers, needed=needed, at_risk=_risk(p, needed, cap))


def _risk(p: PaceInput, needed: int, cap: int) -> str:
    if p.time_left_s <= 0:
        return "past the SLA deadline; running at the most workers allowed"
    if p.per_request_s > p.time_left_s:
        return f"one request takes {p.per_request_s:.1f} s, more than the {p.time_left_s:.0f} s left"
    if needed > cap:
        return (
            f"needs {needed} workers to finish {p.remaining} requests in {p.time_left_s / 3600:.1f} h "
            f"at {p.per_request_s:.2f} s each; at most {cap} allowed (workersMax + batch allowance)"
        )
    return ""


def _needed(p: PaceInput) -> int:
    if math.isinf(p.time_left_s):
        return 0
    if p.time_left_s <= 0:
        return p.remaining  # past the deadline: as fast as allowed
    # More workers than requests cannot help: a request runs on one worker.
    rate = p.remaining * max(p.per_request_s, 0.0) / p.time_left_s
    return p.remaining if rate >= p.remaining else math.ceil(rate)
