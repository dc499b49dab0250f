"""Traces whose figures can be worked out by hand (the stage model's defaults: a cold start
from the source is 0.2 + 0.3 + 1.5 + 12 + 0.5 = 14.5 s; the leader's pass runs every second)."""

from __future__ import annotations

from pathlib import Path

import pytest

import simulate._engine as engine_mod
from simulate import SimSettings, StageModel, load_endpoints, load_fleet, load_trace, parse_policy, simulate
from tests.simulate.conftest import write_trace

NOW0 = SimSettings(warmup_days=0)


def _run(tmp_path: Path, fleet: str, eps: str, rows: list[dict[str, object]], policy: str):  # type: ignore[no-untyped-def]
    f = load_fleet(fleet)
    trace = load_trace(write_trace(tmp_path / "t.jsonl", rows), f)
    return simulate(trace, f, parse_policy(policy, f), endpoints=load_endpoints(eps), settings=NOW0)


def _req(t: float, service: float = 100.0, gpu: str = "H100-80GB:3g.40gb") -> dict[str, object]:
    return {"t": t, "endpoint": "a", "region": "US", "gpu": gpu, "service_s": service}


def test_stage_model_default_cold_start() -> None:
    assert StageModel().cold_start_s("source") == pytest.approx(14.5)
    assert StageModel().cold_start_s("t1") == pytest.approx(2.9)


@pytest.mark.parametrize(("policy", "share"), [("whole", 1.0), ("static:all-balanced", 0.5)])
def test_one_request_on_one_card(
    tmp_path: Path, one_card: str, request_count: str, policy: str, share: float
) -> None:
    # Arrives at 10.5; the pass at 11 places a worker; ready at 25.5 (delay 15); done at 125.5;
    # idle 5 s by the pass at 131, which stops it: the card is held from 11 to 131.
    r = _run(tmp_path, one_card, request_count, [_req(10.5)], policy)
    assert r.p50_queue_delay_s == r.p95_queue_delay_s == pytest.approx(15.0)
    assert r.gpu_hours == pytest.approx(120 / 3600, abs=1e-4)
    assert r.slice_hours_billed == pytest.approx(share * 120 / 3600, abs=1e-4)
    assert (r.jobs, r.completed, r.in_flight, r.dropped, r.cold_starts, r.recuts) == (1, 1, 0, 0, 1, 0)
    assert r.hours[0].jobs == 1 and sum(h.jobs for h in r.hours) == 1


def test_dynamic_recuts_then_places(tmp_path: Path, one_card: str, request_count: str) -> None:
    # The pass at 11 stores a 3g.40gb layout; noded applies it 2 s later (13, after that pass);
    # the pass at 14 places the worker: ready at 28.5, a delay of 18.
    r = _run(tmp_path, one_card, request_count, [_req(10.5)], "dynamic")
    assert r.p95_queue_delay_s == pytest.approx(18.0)
    assert (r.recuts, r.cold_starts, r.dropped) == (1, 1, 0)
    assert r.gpu_hours == pytest.approx((134 - 14) / 3600, abs=1e-4)


def test_constant_load_keeps_one_warm_worker(
    tmp_path: Path, one_card: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    eps = tmp_path_factory.mktemp("e") / "e.toml"
    eps.write_text('[defaults]\nscalerType = "REQUEST_COUNT"\nscalerValue = 1\nidleTimeout = 60\n')
    rows = [_req(10.5 + 10 * k, service=5.0) for k in range(100)]
    r = _run(tmp_path, one_card, str(eps), rows, "whole")
    # The first waits 15 s for the cold start, the second (at 20.5) for the first to end (30.5);
    # the rest find the warm worker idle.  Nearest-rank p99 of 100 delays is the second largest.
    assert r.cold_starts == 1
    assert r.p50_queue_delay_s == 0.0 and r.p99_queue_delay_s == pytest.approx(10.0)
    assert (r.jobs, r.completed, r.dropped) == (100, 100, 0)


def test_unservable_request_is_dropped_not_lost(tmp_path: Path, one_card: str, request_count: str) -> None:
    # all-7g.80gb has no 3g.40gb slice: the job waits until the drain ends, counted as dropped.
    r = _run(tmp_path, one_card, request_count, [_req(10.5)], "static:all-7g.80gb")
    assert (r.jobs, r.completed, r.in_flight, r.dropped) == (1, 0, 0, 1)


def test_clock_never_goes_back(
    tmp_path: Path, one_card: str, request_count: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float] = []
    for name in ("pass_", "_event", "_arrive"):
        orig = getattr(engine_mod.Engine, name)

        def spy(self, t, *a, _orig=orig, **k):  # type: ignore[no-untyped-def]
            seen.append(t)
            return _orig(self, t, *a, **k)

        monkeypatch.setattr(engine_mod.Engine, name, spy)
    rows = [_req(1.0 + 7 * k, service=3.0 + k % 5) for k in range(40)]
    _run(tmp_path, one_card, request_count, rows, "dynamic")
    assert seen and seen == sorted(seen)
