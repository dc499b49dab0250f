"""The autoscaler: one pure tick from (spec, queue stats, workers, state, now) to a decision.

The leader calls :func:`compute_desired_workers` once per endpoint per tick
(every ~2 s, and whenever a queue or worker event wakes the loop) and carries
the returned :class:`ScalerState` to the next tick.  Nothing here reads a
clock, a store or a random source, so a tick is reproducible from its inputs.

Choices (reference/platform_notes.md §4, "Proposed Tide rule"):

* **Load** is ``in_queue + in_progress``: queued non-lowPriority jobs plus
  jobs being run (of any priority).  Queued lowPriority jobs are not load:
  they never scale an endpoint up (not from zero either) but keep the workers
  that already exist from idling out while they wait (the "hold" below).
* **Capacity** is every healthy worker that is, or is about to be, able to take
  jobs: pending, initializing, idle and running.  Counting starting workers
  stops a cold start that takes longer than a tick from starting a second
  worker for the same load.  Stopping and exited workers count for nothing.
* **Broken** workers (``unhealthy``, or crash-looping: ``restarts`` at or over
  :data:`CRASH_LOOP_RESTARTS` while not ready) are not capacity, so a
  replacement is started in the same tick, and they are stopped unless they
  still hold a job (RunPod complaint #2: a crash loop must not look like a
  capacity shortage).  A broken worker holding a job is left alone until its
  claim is released or requeued: we never stop a busy worker.
* **REQUEST_COUNT**: ``ceil(load / scalerValue)`` (RunPod's formula), no windows.
* **QUEUE_DELAY** (KPA-style): per-second buckets of load over a 60 s stable
  and a 6 s panic window; target per worker = ``concurrency_per_worker x 0.7``;
  ``stable = ceil(avg60 / target)``, ``panic = ceil(avg6 / target)``.  Panic
  starts (or is extended by 60 s) when ``panic >= 2 x max(1, ready)`` or when
  the oldest queued job has waited longer than ``scalerValue`` seconds.  In
  panic the count never goes down: ``max(peak so far, stable, panic,
  capacity + queue-delay extra)``.  The queue-delay extra is the number of
  workers the waiting jobs need beyond the free slots of current capacity
  (starting workers count as ``concurrency_per_worker`` free slots each), so a
  slow cold start does not add one worker per tick until ``workersMax``.
* **Idle timeout**: once load has been zero for ``idle_timeout`` seconds the
  windows are ignored and the raw count is 0 (RunPod: a worker lives
  ``idleTimeout`` after its last job; a 60 s window would keep it ~12x longer
  at the default 5 s).  The same timeout applies under REQUEST_COUNT (RunPod
  v2 does not, but an unbounded linger costs money for no gain).
* **No load, no scale-up**: while load is zero the count never exceeds
  current capacity (a window still averaging a past burst must not start
  workers that will find nothing to do).
* **Scale from zero**: any queued non-lowPriority job is load, and every rule
  above gives at least 1 for any load > 0 (a window's mean includes this
  tick), so the first job starts a worker at once, not after a delay.
* **Clamp** to ``[workersMin, workersMax]``; a ``workersMin`` above
  ``workersMax`` is treated as ``workersMax`` (the cap wins: it bounds cost).
* **Which workers stop**: the count goes down only by stopping workers, and
  only these: idle workers (no busy job) whose idle time reached
  ``idle_timeout``, longest idle first; then starting workers (pending before
  initializing) once load has been zero for ``idle_timeout``.  Workers over
  ``workersMax`` (the operator lowered it) are stopped from the same list
  without waiting for the timeout.  A worker with a busy job, or in state
  ``running``, is never chosen.  An idle worker's idle clock is its reported
  ``idle_since``, or else the first tick that saw it idle (kept in the state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from tide.api.endpoints import EndpointSpec
from tide.api.nodes import WorkerState

__all__ = [
    "CRASH_LOOP_RESTARTS",
    "QueueStats",
    "ScaleDecision",
    "ScalerState",
    "WorkerView",
    "compute_desired_workers",
]

STABLE_WINDOW_S = 60.0
PANIC_WINDOW_S = 6.0
PANIC_HOLD_S = 60.0  # panic lasts this long after the last over-threshold tick
PANIC_THRESHOLD = 2.0  # desired_panic / ready that starts a panic
TARGET_UTILIZATION = 0.7  # KPA container-concurrency-target-percentage
CRASH_LOOP_RESTARTS = 3  # restarts at which a worker that is not ready counts as broken

_READY: frozenset[WorkerState] = frozenset({"idle", "running"})
_STARTING: frozenset[WorkerState] = frozenset({"pending", "initializing"})


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """One endpoint's queue, as the job store counts it at the tick."""

    in_queue: int = 0  # queued jobs without policy.lowPriority
    in_queue_low_priority: int = 0  # queued lowPriority jobs
    in_progress: int = 0  # claimed by a worker, any priority
    oldest_queued_age_s: float = 0.0  # age of the oldest non-lowPriority queued job


class WorkerView(msgspec.Struct, frozen=True, kw_only=True):
    """What the autoscaler needs to know about one of the endpoint's workers."""

    worker_id: str
    state: WorkerState
    busy: int = 0  # jobs it holds now
    idle_since: float | None = None  # when it last became idle, if it reports it
    restarts: int = 0


class ScalerState(msgspec.Struct, frozen=True, kw_only=True):
    """Carried from one tick to the next; start with ``ScalerState()``.

    ``buckets`` are (second, load sum, sample count) over the stable window.
    ``idle_seen`` maps an idle worker that did not report ``idle_since`` to
    the first tick that saw it idle.  Treat as immutable.
    """

    buckets: tuple[tuple[int, float, int], ...] = ()
    panic_until: float = 0.0
    panic_peak: int = 0
    last_load_at: float | None = None  # last tick with load > 0
    idle_seen: dict[str, float] = {}


class ScaleDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The tick's answer: start ``start`` workers and stop ``stop`` (by id)."""

    desired: int  # healthy workers wanted, within [workersMin, workersMax]
    start: int  # new workers to start now
    stop: list[str]  # broken first, then surplus; never a busy worker
    panic: bool
    reason: str  # which rule set ``desired``, for logs and /debug
    state: ScalerState


def compute_desired_workers(
    spec: EndpointSpec,
    stats: QueueStats,
    workers: Sequence[WorkerView],
    state: ScalerState,
    now: float,
) -> ScaleDecision:
    """One autoscaler tick for one endpoint.  Pure; see the module docstring."""
    load = stats.in_queue + stats.in_progress
    last_load_at = now if load > 0 else state.last_load_at
    quiet = load == 0 and (last_load_at is None or now - last_load_at >= spec.idle_timeout)
    buckets = _record(state.buckets, now, load)
    healthy, broken = _classify(workers)
    raw, panic_until, peak, reason = _raw_count(spec, stats, healthy, buckets, state, now, quiet)
    desired = _clamp(raw, spec)
    if desired != raw:
        reason = f"{reason}, clamped to [{spec.workers_min}, {spec.workers_max}]"
    idle_seen = _idle_seen(healthy, state.idle_seen, now)
    surplus = _choose_surplus(spec, healthy, desired, idle_seen, last_load_at, now)
    stop = [w.worker_id for w in broken if w.busy == 0] + surplus
    next_state = ScalerState(
        buckets=buckets,
        panic_until=panic_until,
        panic_peak=peak,
        last_load_at=last_load_at,
        idle_seen=idle_seen,
    )
    return ScaleDecision(
        desired=desired,
        start=max(0, desired - (len(healthy) - len(surplus))),
        stop=stop,
        panic=now < panic_until,
        reason=reason,
        state=next_state,
    )


def _raw_count(
    spec: EndpointSpec,
    stats: QueueStats,
    healthy: list[WorkerView],
    buckets: tuple[tuple[int, float, int], ...],
    state: ScalerState,
    now: float,
    quiet: bool,
) -> tuple[int, float, int, str]:
    """The count before clamping: (raw, panic_until, panic peak, reason)."""
    load = stats.in_queue + stats.in_progress
    if spec.scaler_type == "REQUEST_COUNT":
        raw, panic_until, peak, reason = math.ceil(load / spec.scaler_value), 0.0, 0, "request-count"
    else:
        raw, panic_until, peak, reason = _queue_delay(spec, stats, healthy, buckets, state, now)
    if quiet:
        raw, panic_until, peak, reason = 0, 0.0, 0, "idle"
    elif load == 0 and raw > len(healthy):
        raw, reason = len(healthy), f"{reason}, no load: no scale-up"
    if stats.in_queue_low_priority > 0:
        # lowPriority jobs are served by the workers that exist, never by new ones.
        held = min(len(healthy), math.ceil((load + stats.in_queue_low_priority) / _per_worker(spec)))
        if held > raw:
            raw, reason = held, "low-priority-hold"
    return raw, panic_until, peak, reason


def _per_worker(spec: EndpointSpec) -> float:
    """Jobs one worker is expected to carry under the endpoint's scaler."""
    if spec.scaler_type == "REQUEST_COUNT":
        return float(spec.scaler_value)
    return spec.concurrency_per_worker * TARGET_UTILIZATION


def _clamp(raw: int, spec: EndpointSpec) -> int:
    low = min(spec.workers_min, spec.workers_max)
    return max(low, min(raw, spec.workers_max))


def _classify(workers: Sequence[WorkerView]) -> tuple[list[WorkerView], list[WorkerView]]:
    """Split live workers into healthy capacity and broken ones to replace."""
    healthy: list[WorkerView] = []
    broken: list[WorkerView] = []
    for w in workers:
        if w.state in ("stopping", "exited"):
            continue
        crash_looping = w.restarts >= CRASH_LOOP_RESTARTS and w.state not in _READY
        if w.state == "unhealthy" or crash_looping:
            broken.append(w)
        else:
            healthy.append(w)
    return healthy, broken


def _record(
    buckets: tuple[tuple[int, float, int], ...], now: float, load: int
) -> tuple[tuple[int, float, int], ...]:
    """Add this tick's load to its one-second bucket; drop buckets outside the stable window."""
    second = math.floor(now)
    oldest = second - int(STABLE_WINDOW_S)
    kept = [b for b in buckets if oldest < b[0] <= second]
    if kept and kept[-1][0] == second:
        _, total, count = kept[-1]
        kept[-1] = (second, total + load, count + 1)
    else:
        kept.append((second, float(load), 1))
    return tuple(kept)


def _window_avg(buckets: tuple[tuple[int, float, int], ...], since: float) -> float:
    """Mean of per-second bucket means newer than ``since``; never empty (it holds this tick)."""
    means = [total / count for second, total, count in buckets if second > since]
    return sum(means) / len(means)


def _queue_delay(
    spec: EndpointSpec,
    stats: QueueStats,
    healthy: list[WorkerView],
    buckets: tuple[tuple[int, float, int], ...],
    state: ScalerState,
    now: float,
) -> tuple[int, float, int, str]:
    """KPA stable/panic windows plus RunPod's queue delay: (raw, panic_until, peak, reason)."""
    target = _per_worker(spec)
    newest = buckets[-1][0]
    stable = math.ceil(_window_avg(buckets, newest - STABLE_WINDOW_S) / target)
    panic = math.ceil(_window_avg(buckets, newest - PANIC_WINDOW_S) / target)
    ready = sum(1 for w in healthy if w.state in _READY)
    delayed = stats.in_queue > 0 and stats.oldest_queued_age_s > spec.scaler_value
    panic_until = state.panic_until
    if delayed or panic >= PANIC_THRESHOLD * max(1, ready):
        panic_until = now + PANIC_HOLD_S
    if now >= panic_until:
        return stable, panic_until, 0, "stable"
    extra = _delay_extra(spec, stats, healthy) if delayed else 0
    raw = max(state.panic_peak, stable, panic, len(healthy) + extra)
    return raw, panic_until, raw, "queue-delay" if delayed else "panic"


def _delay_extra(spec: EndpointSpec, stats: QueueStats, healthy: list[WorkerView]) -> int:
    """Workers the waiting jobs need beyond the free job slots current capacity will offer."""
    per = spec.concurrency_per_worker
    free = sum(per if w.state in _STARTING else max(0, per - w.busy) for w in healthy)
    short = stats.in_queue - free
    return math.ceil(short / per) if short > 0 else 0


def _idle_seen(healthy: list[WorkerView], seen: dict[str, float], now: float) -> dict[str, float]:
    """Remember when each idle worker without ``idle_since`` was first seen idle."""
    return {
        w.worker_id: seen.get(w.worker_id, now)
        for w in healthy
        if w.state == "idle" and w.busy == 0 and w.idle_since is None
    }


def _choose_surplus(
    spec: EndpointSpec,
    healthy: list[WorkerView],
    desired: int,
    idle_seen: dict[str, float],
    last_load_at: float | None,
    now: float,
) -> list[str]:
    """Pick which healthy workers to stop so that capacity falls toward ``desired``."""
    surplus = len(healthy) - desired
    if surplus <= 0:
        return []
    over_max = len(healthy) - spec.workers_max
    load_gone = last_load_at is None or now - last_load_at >= spec.idle_timeout
    idle = [w for w in healthy if w.state == "idle" and w.busy == 0]
    idle.sort(key=lambda w: (_idle_clock(w, idle_seen, now), w.worker_id))
    starting = [w for w in healthy if w.state in _STARTING and w.busy == 0]
    starting.sort(key=lambda w: (w.state != "pending", w.worker_id))
    chosen: list[str] = []
    for w in idle + starting:
        if len(chosen) == surplus:
            break
        if w.state == "idle":
            timed_out = now - _idle_clock(w, idle_seen, now) >= spec.idle_timeout
        else:
            timed_out = load_gone
        if timed_out or len(chosen) < over_max:
            chosen.append(w.worker_id)
    return chosen


def _idle_clock(w: WorkerView, idle_seen: dict[str, float], now: float) -> float:
    return w.idle_since if w.idle_since is not None else idle_seen.get(w.worker_id, now)
