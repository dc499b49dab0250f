"""The worker's boot report for noded and the owner a load records with its model."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import flashboot  # noqa: E402
from flashboot import ENV_OWNER, ENV_REPORT_DIR, Keeper, read_boot  # noqa: E402
from flashboot.worker._boot import process_started_at  # noqa: E402

from ..conftest import torch_model  # noqa: E402


@pytest.fixture(autouse=True)
def _release_all() -> Iterator[None]:
    yield
    flashboot.release()
    gc.collect()


def test_process_start_time_is_when_the_process_started() -> None:
    assert 0 < process_started_at() <= time.time()
    code = "from flashboot.worker._boot import process_started_at; print(process_started_at())"
    before = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after = time.time()
    assert before - 0.05 <= float(out.stdout) <= after  # one clock tick (10 ms) of resolution


def test_each_load_rewrites_the_boot_report(
    keeper: Keeper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = tmp_path / "reports" / "w-1"
    monkeypatch.setenv(ENV_REPORT_DIR, str(reports))
    sd = torch_model()
    state = keeper.config.state_dir
    flashboot.load("boot-a", source=lambda: sd, device="cpu", state_dir=state)
    first = read_boot(str(reports / "boot.json"))
    assert first is not None and [(r.model_id, r.tier) for r in first.restores] == [("boot-a", "source")]
    assert 0 < first.process_started_at <= first.imported_at <= first.restored_at
    flashboot.release("boot-a")
    flashboot.load("boot-a", source=lambda: sd, device="cpu", state_dir=state)
    second = read_boot(str(reports / "boot.json"))
    assert second is not None and [r.tier for r in second.restores] == ["source", "t1"]
    assert second.imported_at == first.imported_at  # the process's first load marks its imports
    assert second.restores[1].nbytes == first.restores[0].nbytes > 0


def test_no_report_dir_no_report(keeper: Keeper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_REPORT_DIR, raising=False)
    flashboot.load("quiet", source=lambda: torch_model(), device="cpu", state_dir=keeper.config.state_dir)
    assert read_boot(str(tmp_path / "boot.json")) is None


def test_loads_record_their_owner(keeper: Keeper, monkeypatch: pytest.MonkeyPatch) -> None:
    """noded's env names the endpoint and its own store; the holdings give the endpoint back."""
    env_a, env_b = keeper.env(owner="ep-a"), keeper.env(owner="ep-b")
    assert env_a[ENV_OWNER] == "ep-a" and env_a["TIDE_FLASHBOOT_DIR"] != env_b["TIDE_FLASHBOOT_DIR"]
    sd = torch_model()
    for env in (env_a, env_b):  # two endpoints, same model: each loads it into its own store
        monkeypatch.setenv(ENV_OWNER, env[ENV_OWNER])
        flashboot.load("owned", source=lambda: sd, device="cpu", state_dir=env["TIDE_FLASHBOOT_DIR"])
        assert flashboot.last_load_stats().tier == "source"  # type: ignore[union-attr]
        flashboot.release("owned")
    (model,) = keeper.holdings().models  # one fingerprint, held for both
    assert model.owners == ("ep-a", "ep-b") and model.tiers == ("t1",)
    keeper.start()  # a restarted keeper (repair) keeps them
    assert keeper.holdings().models[0].owners == ("ep-a", "ep-b")
