"""The fast worker's patch (issue 17): only runpod's known version, only when not switched off."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from noded.runtime.fastworker import INJECT_DIR, inject_env, wanted

sys.path.insert(0, INJECT_DIR)
import tide_fast_worker

sys.path.remove(INJECT_DIR)


def _fresh_rp_scale() -> types.ModuleType:
    """A private copy of runpod's rp_scale: patching it leaves the installed class alone."""
    import runpod.serverless.modules.rp_scale as installed

    spec = importlib.util.spec_from_file_location(
        "runpod.serverless.modules._rp_scale_copy", installed.__file__
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pinned_sdk_is_the_version_the_patch_knows() -> None:
    # Bumping runpod? Re-diff rp_scale.get_jobs/run_jobs against tide_fast_worker before changing this.
    assert importlib.metadata.version("runpod") == tide_fast_worker.KNOWN_VERSION


def test_patch_applies_to_the_known_version(capsys: pytest.CaptureFixture[str]) -> None:
    m = _fresh_rp_scale()
    original = (m.JobScaler.get_jobs, m.JobScaler.run_jobs, m.JobScaler.kill_worker)
    assert tide_fast_worker.patch(m, version=tide_fast_worker.KNOWN_VERSION)
    assert m.JobScaler._tide_fast_worker is True
    assert all(
        new is not old
        for new, old in zip(
            (m.JobScaler.get_jobs, m.JobScaler.run_jobs, m.JobScaler.kill_worker), original, strict=True
        )
    )
    assert not tide_fast_worker.patch(m)  # once only
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("version", ["1.11.9", "1.12.1", "1.12", "unknown"])
def test_other_versions_run_unchanged_and_say_why(version: str, capsys: pytest.CaptureFixture[str]) -> None:
    m = _fresh_rp_scale()
    original = (m.JobScaler.get_jobs, m.JobScaler.run_jobs, m.JobScaler.kill_worker)
    assert not tide_fast_worker.patch(m, version=version)
    assert (m.JobScaler.get_jobs, m.JobScaler.run_jobs, m.JobScaler.kill_worker) == original
    assert not hasattr(m.JobScaler, "_tide_fast_worker")
    err = capsys.readouterr().err
    assert f"runpod {version} is not the version this patch knows" in err and "unchanged" in err


def test_the_env_switch_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDE_FAST_WORKER", "0")
    m = _fresh_rp_scale()
    assert not tide_fast_worker.patch(m, version=tide_fast_worker.KNOWN_VERSION)
    assert "off (TIDE_FAST_WORKER)" in capsys.readouterr().err


def test_inject_env() -> None:
    assert inject_env({"A": "1"}, "/inj", node_enabled=True) == {"A": "1", "PYTHONPATH": "/inj"}
    assert inject_env({"PYTHONPATH": "/x:/inj"}, "/inj", node_enabled=True)["PYTHONPATH"] == "/inj:/x"
    assert inject_env({"A": "1"}, "/inj", node_enabled=False) == {"A": "1"}
    assert inject_env({"TIDE_FAST_WORKER": "off", "PYTHONPATH": "/x"}, "/inj", node_enabled=True) == {
        "TIDE_FAST_WORKER": "off",
        "PYTHONPATH": "/x",
    }
    assert wanted({}, node_enabled=True) and not wanted({"TIDE_FAST_WORKER": "false"}, node_enabled=True)


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_injected_sitecustomize_hooks_runpod_and_chains_the_images_own(tmp_path: Path) -> None:
    """A fresh interpreter with the directory on PYTHONPATH: the SDK is patched at import,
    asyncio is not imported early, and a sitecustomize further down the path still runs."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "sitecustomize.py").write_text("import builtins\nbuiltins.THEIRS = True\n")
    env = {**os.environ, **inject_env({"PYTHONPATH": str(theirs)}, INJECT_DIR, node_enabled=True)}
    code = (
        "import sys, builtins; early = 'asyncio' in sys.modules\n"
        "from runpod.serverless.modules import rp_scale\n"
        "print(early, getattr(builtins, 'THEIRS', False), rp_scale.JobScaler._tide_fast_worker)"
    )
    assert _python(code, env, tmp_path) == "False True True"


@pytest.mark.parametrize(
    ("fast_worker", "spec_env", "injected"),
    [(True, {}, True), (True, {"TIDE_FAST_WORKER": "0"}, False), (False, {}, False)],
)
def test_containers_get_the_directory_read_only_and_first_on_pythonpath(
    fast_worker: bool, spec_env: dict[str, str], injected: bool
) -> None:
    from noded.runtime import WorkerSpec
    from noded.runtime.containerd._cdi import ContainerEdits
    from noded.runtime.containerd._oci_spec import plan_oci_spec
    from noded.runtime.fastworker import CONTAINER_DIR

    spec = WorkerSpec(id="w1", image="r/x:1", env=spec_env)
    image = {"Cmd": ["python", "handler.py"], "Env": ["PYTHONPATH=/app/lib"]}
    oci = plan_oci_spec(
        spec, image, edits=ContainerEdits(), devices=[], cgroups_path="/t/w1", fast_worker=fast_worker
    )
    env = dict(e.split("=", 1) for e in oci["process"]["env"])
    binds = [m for m in oci["mounts"] if m["destination"] == CONTAINER_DIR]
    if injected:
        assert env["PYTHONPATH"] == f"{CONTAINER_DIR}:/app/lib"  # the image's own path kept, after ours
        assert len(binds) == 1 and binds[0]["source"] == INJECT_DIR and "ro" in binds[0]["options"]
    else:
        assert env["PYTHONPATH"] == "/app/lib" and not binds
