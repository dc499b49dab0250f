"""Property: whatever the trace, jobs are conserved and nothing is dropped on a fleet that can
serve it, and a card is never billed for less than the slices on it."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulate import SimSettings, load_fleet, load_trace, parse_policy, simulate

FLEET = (
    '[[hosts]]\nregion = "US"\ndatacenter = "US-TX-1"\ncount = 2\n'
    'gpus = "2xH100-80GB:mig,1xRTXPRO6000-96GB:mig"\n'
)
GPUS = ["H100-80GB:1g.10gb", "H100-80GB:3g.40gb", "mig-24gb", "RTXPRO6000-96GB:2g.48gb,H100-80GB:3g.40gb"]
rows = st.lists(
    st.tuples(st.floats(0, 600), st.integers(0, len(GPUS) - 1), st.floats(0.5, 120)), min_size=1, max_size=40
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, policy=st.sampled_from(["dynamic", "whole", "static:all-balanced"]))
def test_jobs_conserved(tmp_path: Path, rows: list[tuple[float, int, float]], policy: str) -> None:
    (tmp_path / "f.toml").write_text(FLEET)
    lines = [
        json.dumps({"t": t, "endpoint": f"e{g}", "region": "US", "gpu": GPUS[g], "service_s": s})
        for t, g, s in sorted(rows)
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    fleet = load_fleet(str(tmp_path / "f.toml"))
    trace = load_trace(str(tmp_path / "t.jsonl"), fleet)
    r = simulate(trace, fleet, parse_policy(policy, fleet), settings=SimSettings(warmup_days=0))
    assert r.jobs == len(rows)
    assert r.completed + r.in_flight == r.jobs
    assert r.dropped == 0
    assert r.gpu_hours + 1e-9 >= r.slice_hours_billed
    assert sum(h.jobs for h in r.hours) == r.jobs
