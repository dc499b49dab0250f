"""noded's side of FlashBoot and of boot reports: worker env and mounts per runtime (the agent's
spec through the worker's hooks), holdings as the node API reports them, and a runner forwarding
its worker's boot report."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from flashboot import ENV_DIR, ENV_OWNER, ENV_REPORT_DIR, Holdings, KeeperConfig, ModelHolding
from noded._agent import AgentSettings, NodeAgent
from noded._flashboot import holdings_inventory
from noded._runner import WorkerRunner
from noded.hooks import BootReportHook, HookHost, WorkerHooks, worker_hooks
from noded.inventory import SimulatedGpus
from noded.runtime import Mount, WorkerSpec
from tide.api.nodes import DesiredWorker, WorkerBoot


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = f"/dev/shm/tide-noded-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _agent(tmp_path: Path, shm_dir: str, runtime: str) -> NodeAgent:
    config = KeeperConfig(
        state_dir=str(tmp_path / "fb"), shm_dir=shm_dir, ram_budget_bytes=1 << 20, disk_budget_bytes=1 << 20
    )
    settings = AgentSettings(hostname="n-1", flashboot=config, report_dir=str(tmp_path / "reports"))
    gpus = SimulatedGpus.from_spec("1xH100-80GB", seed=1)
    return NodeAgent(SimpleNamespace(), SimpleNamespace(name=runtime), gpus, settings)  # type: ignore[arg-type]


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _desired(flashboot: bool) -> DesiredWorker:
    return DesiredWorker(
        worker_id="w-1", endpoint_id="ep", revision=1, image="dir:///x", env={"A": "1"}, flashboot=flashboot
    )


def _spec(agent: NodeAgent, d: DesiredWorker) -> WorkerSpec:
    """The spec the agent's runner for ``d`` creates: the desired worker's, through its hooks."""
    return worker_hooks(agent.hook_host, d).prestart(agent._spec(d))


@pytest.mark.parametrize("runtime", ["process", "containerd"])
async def test_flashboot_workers_get_the_keeper_and_every_worker_a_report_dir(
    tmp_path: Path, shm_dir: str, runtime: str
) -> None:
    agent = _agent(tmp_path, shm_dir, runtime)
    assert agent.flashboot is not None
    await agent.flashboot.start()
    report = str(tmp_path / "reports" / "w-1")
    spec = _spec(agent, _desired(flashboot=True))
    # The endpoint's own store (one per endpoint: no worker sees another endpoint's weights).
    own_state, own_shm = str(tmp_path / "fb" / "owners" / "ep"), f"{shm_dir}/owners/ep"
    assert spec.env == {"A": "1", ENV_REPORT_DIR: report, ENV_DIR: own_state, ENV_OWNER: "ep"}
    assert _is_dir(report) and _is_dir(own_state) and _is_dir(own_shm)
    binds = [Mount(source=p, target=p) for p in (report, own_state, own_shm)]
    assert spec.mounts == (binds if runtime == "containerd" else [])  # processes see the host's paths
    plain = _spec(agent, _desired(flashboot=False))
    assert plain.env == {"A": "1", ENV_REPORT_DIR: report}
    assert (await agent.inventory()).flashboot == []
    await worker_hooks(agent.hook_host, _desired(flashboot=False)).stop()
    assert not _is_dir(report)


async def test_a_keeper_that_cannot_start_leaves_flashboot_off(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    agent = _agent(tmp_path, str(tmp_path / "file" / "shm"), "process")  # not a directory
    assert agent.flashboot is not None
    await agent.flashboot.start()
    assert ENV_DIR not in _spec(agent, _desired(flashboot=True)).env
    assert await agent.flashboot.holdings() == []


def test_holdings_name_the_endpoints_that_loaded_each_model() -> None:
    model = ModelHolding(
        fingerprint="fp",
        model_ids=("m",),
        data_bytes=10,
        image_bytes=4106,
        tiers=("t1", "t2"),
        pinned=False,
        workers=0,
        last_used=1.0,
        owners=("ep-a",),
    )
    held = Holdings(
        t0=(),
        t1=("fp",),
        t2=("fp",),
        models=(model,),
        ram_used=10,
        ram_free=0,
        ram_budget=1,
        disk_used=1,
        disk_budget=1,
    )
    (h,) = holdings_inventory(held)
    assert (h.fingerprint, h.model_ids, h.endpoints, h.tiers, h.nbytes) == (
        "fp",
        ["m"],
        ["ep-a"],
        ["t1", "t2"],
        10,
    )


def test_runner_forwards_the_workers_boot_report(tmp_path: Path) -> None:
    host = HookHost(runtime="process", on_change=lambda: None, report_root=str(tmp_path))
    hook = BootReportHook(host, _desired(flashboot=False))
    runner = WorkerRunner(
        SimpleNamespace(),  # the runtime: not used here
        WorkerSpec(id="w-1", image="dir:///x"),
        endpoint_id="ep",
        revision=1,
        on_change=lambda: None,
        hooks=WorkerHooks([hook]),
    )
    assert not hook.poll() and runner.report().boot is None
    boot = WorkerBoot(process_started_at=1.0, imported_at=2.0, restored_at=3.0)
    (tmp_path / "w-1").mkdir()
    (tmp_path / "w-1" / "boot.json").write_bytes(msgspec.json.encode(boot))
    assert hook.poll() and not hook.poll()  # read once, then unchanged
    assert runner.report().boot == boot
    hook.precreate()  # what a restart does first
    assert runner.report().boot is None and not (tmp_path / "w-1" / "boot.json").exists()


async def test_a_leftover_stopped_without_a_runner_gets_its_stop_hooks(tmp_path: Path, shm_dir: str) -> None:
    agent = _agent(tmp_path, shm_dir, "containerd")
    assert agent.flashboot is not None
    calls: list[str] = []

    async def stop(worker_id: str, *, grace: float) -> None:
        calls.append(f"stop {worker_id}")

    async def delete(worker_id: str) -> None:
        calls.append(f"delete {worker_id}")

    agent.runtime = SimpleNamespace(name="containerd", stop=stop, delete=delete)
    (tmp_path / "reports" / "w-9").mkdir(parents=True)
    await agent._stop_leftover("w-9")  # an earlier noded's worker, no longer desired
    assert calls == ["stop w-9", "delete w-9"]
    assert not (tmp_path / "reports" / "w-9").exists() and agent.flashboot.wake.is_set()
