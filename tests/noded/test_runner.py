"""noded's restart policy and the worker runner that follows it, over an in-memory runtime.

The policy: exponential backoff over the exits of a recent window, capped; unhealthy after N
exits in the window; a quiet window resets it.  The runner: restarts a worker that exits while
desired, reports crash loops and start failures, stops for good on kill (even mid-start), and
leaves the worker running on detach.  It runs its worker's hooks: each phase in the hooks'
order, and the stop hooks even when stopping the worker failed.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from noded import RestartPolicy, WorkerRunner
from noded.hooks import PoststartRequest, PrestartRequest, PrestartResponse, WorkerHooks
from noded.runtime import Mount, WorkerSpec, WorkerStatus
from tide.api.errors import InvalidArgument, NotFound, Unavailable
from tide.api.nodes import WorkerReport

# -- the policy ------------------------------------------------------------


def test_backoff_doubles_from_base_up_to_the_cap() -> None:
    p = RestartPolicy(base=1.0, cap=30.0)
    assert [p.delay(n) for n in range(0, 8)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@given(
    base=st.floats(0.01, 10),
    cap=st.floats(0.01, 600),
    n=st.integers(0, 10_000),
)
def test_backoff_is_bounded_and_never_shrinks_as_exits_add_up(base: float, cap: float, n: int) -> None:
    p = RestartPolicy(base=base, cap=cap)
    assert min(base, cap) <= p.delay(n) <= cap
    assert p.delay(n) <= p.delay(n + 1)


def test_only_exits_inside_the_window_count() -> None:
    p = RestartPolicy(unhealthy_after=3, window=60.0)
    now = 1000.0
    assert p.recent([now - 120, now - 61, now - 59, now - 1], now) == 2
    assert not p.unhealthy([now - 120, now - 61, now - 59, now - 1], now)
    assert p.unhealthy([now - 30, now - 20, now - 10], now)
    # a worker that ran quietly for a whole window starts its backoff over
    assert p.delay(p.recent([now - 300, now - 200, now - 100, now], now)) == p.base


# -- the runner over a fake runtime ---------------------------------------


class FakeRuntime:
    """A ContainerRuntime in memory: each start is a new incarnation the test can make exit."""

    name = "fake"

    def __init__(self) -> None:
        self.specs: dict[str, WorkerSpec] = {}
        self.states: dict[str, WorkerStatus] = {}
        self.exits: dict[str, asyncio.Event] = {}
        self.starts: dict[str, int] = {}
        self.stops: list[str] = []
        self.create_error: Exception | None = None
        self.start_gate: asyncio.Event | None = None  # set: starts pass; None: no gate
        self.wait_error: Exception | None = None

    async def create(self, spec: WorkerSpec) -> None:
        if self.create_error is not None:
            raise self.create_error
        self.specs[spec.id] = spec
        self.states[spec.id] = WorkerStatus(id=spec.id, state="created", labels=spec.labels)

    async def start(self, worker_id: str) -> WorkerStatus:
        if self.start_gate is not None:
            await self.start_gate.wait()
        self.starts[worker_id] = self.starts.get(worker_id, 0) + 1
        self.exits[worker_id] = asyncio.Event()
        status = WorkerStatus(
            id=worker_id, state="running", pid=1000 + self.starts[worker_id], started_at=1.0
        )
        self.states[worker_id] = status
        return status

    def crash(self, worker_id: str, code: int = 137) -> None:
        self.states[worker_id] = WorkerStatus(id=worker_id, state="exited", exit_code=code)
        self.exits[worker_id].set()

    async def stop(self, worker_id: str, *, grace: float = 10.0) -> WorkerStatus:
        if worker_id not in self.states:
            raise NotFound(worker_id)
        self.stops.append(worker_id)
        if self.states[worker_id].state == "running":
            self.crash(worker_id, 143)
        return self.states[worker_id]

    async def kill(self, worker_id: str, signal: int) -> None:
        self.crash(worker_id, 128 + signal)

    async def wait(self, worker_id: str) -> WorkerStatus:
        if self.wait_error is not None:
            error, self.wait_error = self.wait_error, None
            raise error
        await self.exits[worker_id].wait()
        return self.states[worker_id]

    async def status(self, worker_id: str) -> WorkerStatus:
        if worker_id not in self.states:
            raise NotFound(worker_id)
        return self.states[worker_id]

    async def list(self) -> builtins.list[WorkerStatus]:
        return list(self.states.values())

    async def delete(self, worker_id: str) -> None:
        self.states.pop(worker_id, None)
        self.specs.pop(worker_id, None)

    async def logs(self, worker_id: str, *, tail: int = 100) -> builtins.list[str]:
        return []

    async def close(self) -> None:
        pass


FAST = RestartPolicy(base=0.01, cap=0.05, unhealthy_after=3, window=60.0)
SPEC = WorkerSpec(id="w-1", image="dir:///x", command=["true"])


@pytest.fixture
async def group() -> AsyncIterator[asyncio.TaskGroup]:
    async with asyncio.TaskGroup() as tg:
        yield tg
        for task in asyncio.all_tasks():
            if task.get_name().startswith("worker-"):
                task.cancel()


def runner(rt: FakeRuntime, policy: RestartPolicy = FAST) -> WorkerRunner:
    return WorkerRunner(
        rt, SPEC, endpoint_id="ep", revision=1, on_change=lambda: None, policy=policy, stop_grace=1.0
    )


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - a test polls the state it observes
            await asyncio.sleep(0.005)


async def test_a_worker_that_exits_is_restarted_with_its_count(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    r = runner(rt)
    r.run(group)
    await until(lambda: r.state == "initializing")
    rt.crash("w-1")
    await until(lambda: rt.starts.get("w-1") == 2 and r.state == "initializing")
    report = r.report()
    assert report.restarts == 1 and report.exit_code == 137 and report.state == "initializing"
    r.detach()


async def test_a_crash_loop_is_reported_unhealthy(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    r = runner(rt, RestartPolicy(base=0.2, cap=0.2, unhealthy_after=3, window=60.0))
    r.run(group)
    for n in range(1, 4):
        await until(lambda n=n: rt.starts.get("w-1") == n and r.state == "initializing")  # type: ignore[misc]
        rt.crash("w-1", 1)
    await until(lambda: r.state == "unhealthy")
    assert "crash-looping" in r.reason and r.restarts == 3
    r.detach()


async def test_a_worker_that_cannot_start_is_unhealthy_and_retried(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    rt.create_error = InvalidArgument("image directory /x does not exist")
    r = runner(rt)
    r.run(group)
    await until(lambda: r.state == "unhealthy")
    assert r.reason == "could not start: image directory /x does not exist"
    rt.create_error = None  # fixed (the directory appeared): the next retry starts it
    await until(lambda: r.state == "initializing")
    assert rt.starts["w-1"] == 1
    r.detach()


async def test_kill_stops_and_deletes_and_never_restarts(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    r = runner(rt)
    r.run(group)
    await until(lambda: r.state == "initializing")
    await r.kill()
    assert rt.stops == ["w-1"] and "w-1" not in rt.states
    assert (r.state, r.reason) == ("exited", "stopped by the scheduler")
    await asyncio.sleep(0.1)  # longer than the backoff: nothing comes back
    assert rt.starts["w-1"] == 1 and "w-1" not in rt.states


async def test_kill_during_a_start_stops_what_that_start_started(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    rt.start_gate = asyncio.Event()
    r = runner(rt)
    r.run(group)
    await until(lambda: "w-1" in rt.states)  # created; start() is blocked in the runtime
    killing = asyncio.create_task(r.kill())
    await asyncio.sleep(0.02)
    assert not killing.done()  # waits for the start in flight instead of abandoning it
    rt.start_gate.set()
    await killing
    assert rt.starts["w-1"] == 1 and rt.stops == ["w-1"] and "w-1" not in rt.states


async def test_detach_leaves_the_worker_running(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    r = runner(rt)
    r.run(group)
    await until(lambda: r.state == "initializing")
    r.detach()
    await asyncio.sleep(0.05)
    assert rt.states["w-1"].state == "running" and rt.stops == []


async def test_an_adopted_worker_is_watched_not_restarted(group: asyncio.TaskGroup) -> None:
    rt = FakeRuntime()
    await rt.create(SPEC)
    adopted = await rt.start("w-1")
    r = runner(rt)
    r.run(group, adopted)
    await until(lambda: r.state == "initializing")
    assert rt.starts["w-1"] == 1 and r.started_at == adopted.started_at
    rt.crash("w-1")
    await until(lambda: rt.starts["w-1"] == 2)  # and restarted like any other once it exits
    r.detach()


async def test_a_failed_wait_restarts_the_worker_instead_of_failing_the_agent(
    group: asyncio.TaskGroup,
) -> None:
    rt = FakeRuntime()
    rt.wait_error = NotFound("state vanished")
    r = runner(rt)
    r.run(group)
    await until(lambda: rt.starts.get("w-1") == 2 and r.state == "initializing")
    assert r.restarts == 1
    r.detach()


# -- the runner runs its worker's hooks --------------------------------------


class Recorder:
    """A hook with every phase, recording each call in a log shared with other recorders."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        self.log.append(f"{self.name}.prestart")
        return PrestartResponse(env={self.name: "1"}, mounts=[Mount(source=f"/{self.name}", target="/m")])

    def precreate(self) -> None:
        self.log.append(f"{self.name}.precreate")

    async def poststart(self, req: PoststartRequest) -> None:
        self.log.append(f"{self.name}.poststart")
        try:
            await asyncio.Event().wait()  # beside the worker until it exits
        finally:
            self.log.append(f"{self.name}.poststart-end")

    def report(self, report: WorkerReport) -> WorkerReport:
        return msgspec.structs.replace(report, reason=report.reason + self.name)

    async def stop(self) -> None:
        self.log.append(f"{self.name}.stop")


def hooked(rt: FakeRuntime, log: list[str]) -> WorkerRunner:
    hooks = WorkerHooks([Recorder("a", log), Recorder("b", log)])
    return WorkerRunner(
        rt, SPEC, endpoint_id="ep", revision=1, on_change=lambda: None, policy=FAST, hooks=hooks
    )


async def test_the_runner_calls_each_phase_in_the_hooks_order(group: asyncio.TaskGroup) -> None:
    rt, log = FakeRuntime(), list[str]()
    r = hooked(rt, log)
    assert log == ["a.prestart", "b.prestart"]  # once, when the runner is made
    assert r.spec.env == {"a": "1", "b": "1"} and [m.source for m in r.spec.mounts] == ["/a", "/b"]
    r.run(group)
    await until(lambda: log[-2:] == ["a.poststart", "b.poststart"])
    assert log[2:4] == ["a.precreate", "b.precreate"] and rt.specs["w-1"] == r.spec
    assert r.report().reason == "ab"
    rt.crash("w-1")  # the poststart hooks end with the worker; the restart runs precreate again
    await until(lambda: rt.starts.get("w-1") == 2 and log[-2:] == ["a.poststart", "b.poststart"])
    # poststart hooks run side by side: they end together, in no set order
    assert sorted(log[6:8]) == ["a.poststart-end", "b.poststart-end"]
    assert log[8:10] == ["a.precreate", "b.precreate"]
    await r.kill()
    assert [e for e in log if e.endswith(".stop")] == ["a.stop", "b.stop"]
    await until(lambda: log.count("b.poststart-end") == 2)  # the kill cancelled the last ones


async def test_stop_hooks_run_when_stopping_the_worker_fails(group: asyncio.TaskGroup) -> None:
    rt, log = FakeRuntime(), list[str]()
    r = hooked(rt, log)
    r.run(group)
    await until(lambda: r.state == "initializing")

    async def broken_stop(worker_id: str, *, grace: float = 10.0) -> WorkerStatus:
        raise Unavailable("containerd is restarting")

    rt.stop = broken_stop  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await r.kill()
    assert log[-2:] == ["a.stop", "b.stop"]


async def test_detach_runs_no_stop_hook(group: asyncio.TaskGroup) -> None:
    rt, log = FakeRuntime(), list[str]()
    r = hooked(rt, log)
    r.run(group)
    await until(lambda: r.state == "initializing")
    r.detach()
    await asyncio.sleep(0.05)
    assert not any(entry.endswith(".stop") for entry in log) and rt.states["w-1"].state == "running"
