"""noded's pure worker plan: ``plan_workers(desired, observed, runners)``.

Properties: applying a plan to a simulated host and planning again yields an empty plan; a
desired worker is never stopped; every desired worker ends up managed at its revision; a worker
running at the same revision is adopted, never restarted; a revision change replaces it; whatever
is not desired (running, exited or never started) is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from noded import WorkerPlan, plan_workers
from noded._agent import LABEL_REVISION
from noded.runtime import WorkerStatus
from tide.api.nodes import DesiredWorker

IDS = [f"w-{i}" for i in range(6)]
State = Literal["created", "running", "exited"]


def desired(worker_id: str, revision: int = 1) -> DesiredWorker:
    return DesiredWorker(worker_id=worker_id, endpoint_id="ep", revision=revision, image="dir:///x")


def observed(worker_id: str, state: State = "running", revision: int = 1) -> WorkerStatus:
    return WorkerStatus(id=worker_id, state=state, labels={LABEL_REVISION: str(revision)})


@dataclass
class Host:
    """What noded manages (runners: id -> revision) and what its runtime holds (observed)."""

    runners: dict[str, int] = field(default_factory=dict)
    observed: dict[str, WorkerStatus] = field(default_factory=dict)

    def apply(self, plan: WorkerPlan) -> None:
        """Each step as the agent performs it, done and successful."""
        for wid in plan.stop:  # kill: the runner goes, the runtime forgets the worker
            self.runners.pop(wid, None)
            self.observed.pop(wid, None)
        for d in [*plan.replace, *plan.start]:  # (kill, then) start fresh at the new revision
            self.runners[d.worker_id] = d.revision
            self.observed[d.worker_id] = observed(d.worker_id, "running", d.revision)
        for d in plan.adopt:  # a runner attaches to the running worker
            self.runners[d.worker_id] = d.revision

    def plan(self, want: list[DesiredWorker]) -> WorkerPlan:
        return plan_workers(want, list(self.observed.values()), dict(self.runners))


desired_sets = st.dictionaries(st.sampled_from(IDS), st.integers(1, 3), max_size=len(IDS)).map(
    lambda d: [desired(w, r) for w, r in sorted(d.items())]
)
hosts = st.builds(
    Host,
    runners=st.dictionaries(st.sampled_from(IDS), st.integers(1, 3), max_size=len(IDS)),
    observed=st.dictionaries(
        st.sampled_from(IDS),
        st.tuples(st.sampled_from(["created", "running", "exited"]), st.integers(1, 3)),
        max_size=len(IDS),
    ).map(lambda d: {w: observed(w, s, r) for w, (s, r) in d.items()}),  # type: ignore[arg-type]
)


@settings(max_examples=300, deadline=None)
@given(want=desired_sets, host=hosts)
def test_applying_the_plan_then_planning_again_is_empty(want: list[DesiredWorker], host: Host) -> None:
    host.apply(host.plan(want))
    assert host.plan(want).empty
    assert host.runners == {d.worker_id: d.revision for d in want}  # exactly what is desired
    assert set(host.observed) <= set(host.runners)  # nothing left behind


@settings(max_examples=300, deadline=None)
@given(want=desired_sets, host=hosts)
def test_never_stops_what_is_desired_and_stops_everything_else(want: list[DesiredWorker], host: Host) -> None:
    plan = host.plan(want)
    wanted = {d.worker_id for d in want}
    assert not set(plan.stop) & wanted
    assert set(plan.stop) == (set(host.runners) | set(host.observed)) - wanted
    acted = [d.worker_id for d in [*plan.start, *plan.adopt, *plan.replace]]
    assert len(acted) == len(set(acted))  # each desired worker gets at most one action


@settings(max_examples=300, deadline=None)
@given(want=desired_sets, host=hosts)
def test_each_desired_worker_gets_the_action_its_state_calls_for(
    want: list[DesiredWorker], host: Host
) -> None:
    plan = host.plan(want)
    action = {d.worker_id: kind for kind in ("start", "adopt", "replace") for d in getattr(plan, kind)}
    for d in want:
        seen = host.observed.get(d.worker_id)
        if d.worker_id in host.runners:
            expected = None if host.runners[d.worker_id] == d.revision else "replace"
        elif seen is not None and seen.state == "running":
            expected = "adopt" if seen.labels[LABEL_REVISION] == str(d.revision) else "replace"
        else:
            expected = "start"
        assert action.get(d.worker_id) == expected, (d, seen, host.runners)


def test_adopts_workers_an_earlier_noded_left_running() -> None:
    host = Host(observed={"w-0": observed("w-0"), "w-1": observed("w-1")})
    plan = host.plan([desired("w-0"), desired("w-1")])
    assert [d.worker_id for d in plan.adopt] == ["w-0", "w-1"]
    assert not (plan.start or plan.stop or plan.replace)


def test_replaces_a_worker_whose_revision_changed() -> None:
    running = Host(observed={"w-0": observed("w-0", revision=1)})
    assert [d.revision for d in running.plan([desired("w-0", 2)]).replace] == [2]
    managed = Host(runners={"w-0": 1}, observed={"w-0": observed("w-0", revision=1)})
    plan = managed.plan([desired("w-0", 2)])
    assert [d.worker_id for d in plan.replace] == ["w-0"] and not plan.stop


def test_stops_undesired_workers_and_cleans_up_leftovers() -> None:
    host = Host(
        runners={"w-0": 1},
        observed={
            "w-0": observed("w-0"),
            "w-1": observed("w-1", "exited"),
            "w-2": observed("w-2", "created"),
            "w-3": observed("w-3"),
        },
    )
    assert host.plan([desired("w-3")]).stop == ["w-0", "w-1", "w-2"]


def test_a_managed_worker_that_exited_is_left_to_its_runner() -> None:
    host = Host(runners={"w-0": 1}, observed={"w-0": observed("w-0", "exited")})
    assert host.plan([desired("w-0")]).empty  # the runner restarts it with backoff


def test_a_desired_worker_that_exited_while_noded_was_down_is_started_again() -> None:
    host = Host(observed={"w-0": observed("w-0", "exited"), "w-1": observed("w-1", "created")})
    plan = host.plan([desired("w-0"), desired("w-1")])
    assert [d.worker_id for d in plan.start] == ["w-0", "w-1"] and not plan.stop
