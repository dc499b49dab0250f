"""End to end: `tide simulate gen-trace`, then `tide simulate` on it, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tide(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "tide.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sim")
    r = _tide(
        "simulate",
        "gen-trace",
        "--out",
        "day.jsonl",
        "--requests",
        "400",
        "--seed",
        "3",
        "--fleet-out",
        "fleet.toml",
        "--hosts",
        "4",
        cwd=d,
    )
    assert r.returncode == 0, r.stderr
    assert "wrote 400 requests" in r.stdout
    return d


def test_simulate_json(day: Path) -> None:
    r = _tide(
        "simulate",
        "--trace",
        "day.jsonl",
        "--fleet",
        "fleet.toml",
        "--policy",
        "dynamic",
        "--warmup-days",
        "0",
        "--json",
        cwd=day,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in (
        "gpu_hours",
        "slice_hours_billed",
        "p50_queue_delay_s",
        "p95_queue_delay_s",
        "p99_queue_delay_s",
        "jobs",
        "dropped",
        "cold_starts",
        "recuts",
        "hours",
    ):
        assert key in out
    assert out["jobs"] == 400 and out["dropped"] == 0 and len(out["hours"]) == 24
    assert out["completed"] + out["in_flight"] == out["jobs"]


def test_simulate_text_and_bad_input(day: Path) -> None:
    r = _tide(
        "simulate",
        "--trace",
        "day.jsonl",
        "--fleet",
        "fleet.toml",
        "--policy",
        "whole",
        "--warmup-days",
        "0",
        cwd=day,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("whole: ") and "GPU-hours" in r.stdout
    (day / "bad.jsonl").write_text(
        '{"t": 1, "endpoint": "a", "region": "US", "gpu": "H100-80GB", "service_s": 1, "x": 1}\n'
    )
    r = _tide("simulate", "--trace", "bad.jsonl", "--fleet", "fleet.toml", cwd=day)
    assert r.returncode == 1 and "bad.jsonl:1:" in r.stderr and "unknown field" in r.stderr


def test_help_teaches(day: Path) -> None:
    r = _tide("simulate", "--help", cwd=day)
    assert r.returncode == 0 and "examples:" in r.stdout and "best-static" in r.stdout
