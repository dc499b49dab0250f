"""The model cache hook: env and a read-only bind at prestart, the fetch before each start, the
tier in the worker's report, the pin while the worker lives; and the runner failing a start on a
model that does not resolve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from noded.hooks import HookHost, ModelCacheHook, PrestartRequest
from noded.runtime import Mount, WorkerSpec
from tide.api.errors import NotFound
from tide.api.nodes import DesiredWorker, WorkerReport
from tiered_storage import ModelCache, parse_model_ref

SPEC = WorkerSpec(id="w-1", image="dir:///x")


def _setup(tmp_path: Path, runtime: str, model: str) -> tuple[ModelCache, ModelCacheHook, list[int]]:
    cache = ModelCache(tmp_path / "cache", budget_bytes=1 << 20)
    changes: list[int] = []
    host = HookHost(runtime=runtime, on_change=lambda: changes.append(1), models=cache)
    worker = DesiredWorker(worker_id="w-1", endpoint_id="ep", revision=1, image="dir:///x", model=model)
    return cache, ModelCacheHook(host, worker), changes


@pytest.mark.parametrize("runtime", ["process", "containerd"])
async def test_a_worker_gets_its_model_path_staged_and_reported(tmp_path: Path, runtime: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(b"weights")
    url = (tmp_path / "src").as_uri()
    cache, hook, changes = _setup(tmp_path, runtime, url)
    ref = parse_model_ref(url)
    got = hook.prestart(PrestartRequest(spec=SPEC))
    where = str(tmp_path / "cache" / ref.id)
    assert got.env["TIDE_MODEL_PATH"] == f"{where}/files" and "HF_HUB_CACHE" not in got.env
    assert got.mounts == (
        [Mount(source=where, target=where, read_only=True)] if runtime == "containerd" else []
    )
    await hook.prepare()
    assert (Path(got.env["TIDE_MODEL_PATH"]) / "w.bin").read_bytes() == b"weights" and changes
    report = hook.report(WorkerReport(worker_id="w-1", endpoint_id="ep", state="running"))
    assert report.model is not None and (report.model.tier, report.model.nbytes) == ("source", 7)
    await hook.prepare()  # a restart: the host holds it now
    assert hook.fetch is not None and hook.fetch.tier == "host"
    assert cache._pins[ref.id] == 1  # pinned once, however often it starts
    await hook.stop()
    assert not cache._pins


async def test_hf_models_get_the_hf_cache_env(tmp_path: Path) -> None:
    _, hook, _ = _setup(tmp_path, "process", "hf://acme/tiny@v2")
    env = hook.prestart(PrestartRequest(spec=SPEC)).env
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"].endswith("/hub")


async def test_no_model_or_no_cache_adds_nothing(tmp_path: Path) -> None:
    _, hook, _ = _setup(tmp_path, "containerd", "")
    assert hook.prestart(PrestartRequest(spec=SPEC)).env == {}
    await hook.prepare()
    await hook.stop()
    host = HookHost(runtime="containerd", on_change=lambda: None)
    worker = DesiredWorker(worker_id="w", endpoint_id="ep", revision=1, image="x", model="file:///m")
    assert ModelCacheHook(host, worker).prestart(PrestartRequest(spec=SPEC)).env == {}


async def test_a_model_that_does_not_resolve_fails_the_start(tmp_path: Path) -> None:
    _, hook, _ = _setup(tmp_path, "process", "file:///nonexistent/model")
    hook.prestart(PrestartRequest(spec=SPEC))
    with pytest.raises(NotFound, match="no such file"):
        await hook.prepare()
    assert os.listdir(tmp_path / "cache") == []
