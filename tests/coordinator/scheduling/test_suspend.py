"""plan_suspend / plan_evictions (coordinator/scheduling/_suspend.py): properties and examples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduling import (
    SuspendCandidate,
    SuspendedWorker,
    SuspendSettings,
    plan_evictions,
    plan_suspend,
)

NOW = 10_000.0
GIB = 1 << 30
NODES = ["n1", "n2"]
GPUS = {n: [f"{n}-gpu{i}" for i in range(3)] for n in NODES}
EPS = ["ep-a", "ep-b"]


def _sw(w: str, ep: str = "ep-a", node: str = "n1", dev: str = "n1-gpu0", **kw: object) -> SuspendedWorker:
    base: dict[str, object] = {"version": 1, "suspended_at": NOW - 10, "rss_bytes": GIB}
    base.update(kw)
    return SuspendedWorker(worker_id=w, endpoint_id=ep, node_id=node, devices=[dev], **base)  # type: ignore[arg-type]


def _plan(suspended: list[SuspendedWorker], want: dict[str, int], **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "candidates": [],
        "versions": {"ep-a": 1, "ep-b": 1},
        "budgets": {"n1": 4 * GIB, "n2": 4 * GIB},
        "busy_devices": {},
        "now": NOW,
    }
    args.update(kw)
    return plan_suspend(suspended=suspended, want=want, **args)  # type: ignore[arg-type]


def test_scale_up_resumes_the_suspended_worker_instead_of_placing() -> None:
    sp = _plan([_sw("w1")], {"ep-a": 1})
    assert sp.resume == ["w1"] and sp.add == {} and sp.drop == []


def test_resume_needs_the_same_version_and_a_free_gpu() -> None:
    assert _plan([_sw("w1", version=0)], {"ep-a": 1}).drop == ["w1"]  # endpoint changed: stale
    taken = _plan([_sw("w1")], {"ep-a": 1}, busy_devices={"n1": ["n1-gpu0"]})
    assert taken.resume == [] and taken.add == {"ep-a": 1} and taken.drop == []  # stays suspended


def test_ttl_exited_and_budgetless_hosts_drop() -> None:
    sp = _plan(
        [_sw("old", suspended_at=NOW - 7200), _sw("dead", exited=True), _sw("n2w", node="n2", dev="n2-gpu0")],
        {},
        budgets={"n1": 4 * GIB},
    )
    assert sorted(sp.drop) == ["dead", "n2w", "old"]


def test_over_budget_drops_the_oldest_first() -> None:
    ws = [_sw(f"w{i}", dev=f"n1-gpu{i}", suspended_at=NOW - 100 + i) for i in range(3)]
    sp = _plan(ws, {}, budgets={"n1": 2 * GIB})
    assert sp.drop == ["w0"]


def test_only_hosts_with_a_budget_suspend_and_disabled_suspends_nothing() -> None:
    cands = [SuspendCandidate(worker_id="w1", endpoint_id="ep-a", node_id="n1")]
    cands += [SuspendCandidate(worker_id="w2", endpoint_id="ep-a", node_id="n2")]
    assert _plan([], {}, candidates=cands, budgets={"n1": GIB}).suspend == ["w1"]
    off = SuspendSettings(enabled=False)
    assert _plan([], {}, candidates=cands, settings=off).suspend == []


def test_evictions_name_the_suspended_workers_whose_gpu_was_placed_on() -> None:
    ws = [_sw("w1"), _sw("w2", dev="n1-gpu1")]
    assert plan_evictions(ws, {"n1": ["n1-gpu1"], "n2": ["n1-gpu0"]}) == ["w2"]


@st.composite
def _world(draw: st.DrawFn) -> tuple[list[SuspendedWorker], dict[str, list[str]], dict[str, int]]:
    devices = [(n, d) for n in NODES for d in GPUS[n]]
    picks = draw(st.lists(st.sampled_from(devices), max_size=6))
    suspended = [
        _sw(
            f"s{i}",
            ep=draw(st.sampled_from(EPS)),
            node=n,
            dev=d,
            version=draw(st.sampled_from([0, 1])),
            suspended_at=NOW - draw(st.floats(0, 5000)),
            rss_bytes=draw(st.integers(0, 3 * GIB)),
        )
        for i, (n, d) in enumerate(picks)
    ]
    free = [x for x in devices if draw(st.booleans())]
    busy: dict[str, list[str]] = {}
    for n, d in devices:
        if (n, d) not in free:
            busy.setdefault(n, []).append(d)
    want = {ep: draw(st.integers(0, 4)) for ep in EPS}
    return suspended, busy, want


@settings(max_examples=300, deadline=None)
@given(_world())
def test_properties(world: tuple[list[SuspendedWorker], dict[str, list[str]], dict[str, int]]) -> None:
    suspended, busy, want = world
    sp = _plan(suspended, want, busy_devices=busy)
    by_id = {s.worker_id: s for s in suspended}
    # Never two running workers on one GPU: resumed workers take devices no running worker holds,
    # and no two resumed workers share one.
    running = {(n, d) for n, ds in busy.items() for d in ds}
    for w in sp.resume:
        for d in by_id[w].devices:
            assert (by_id[w].node_id, d) not in running
            running.add((by_id[w].node_id, d))
    # A suspended worker never counts toward capacity: what is wanted is resumed or placed fresh.
    for ep in EPS:
        resumed = [w for w in sp.resume if by_id[w].endpoint_id == ep]
        assert len(resumed) + sp.add.get(ep, 0) == want[ep]
    # Resume preferred: a fresh placement only once no eligible suspended worker is left.
    for ep, n in sp.add.items():
        assert n > 0
        for s in suspended:
            eligible = s.endpoint_id == ep and s.version == 1 and s.suspended_at > NOW - 3600
            free_now = not set(s.devices) & {d for (node, d) in running if node == s.node_id}
            assert not (eligible and free_now and s.worker_id not in sp.resume and s.worker_id not in sp.drop)
    assert not set(sp.resume) & set(sp.drop)
    # Within budget after the drops.
    for node in NODES:
        left = [s for s in suspended if s.node_id == node and s.worker_id not in sp.drop + sp.resume]
        assert sum(s.rss_bytes for s in left) <= 4 * GIB
    # Evictions: after a placement on any free device, no suspended worker shares it.
    placed = {n: [d for d in GPUS[n] if d not in {x for _, x in running}] for n in NODES}
    frozen = [s for s in suspended if s.worker_id not in sp.resume + sp.drop]
    evicted = set(plan_evictions(frozen, placed))
    for s in frozen:
        if s.worker_id not in evicted:
            assert not set(s.devices) & set(placed[s.node_id])
