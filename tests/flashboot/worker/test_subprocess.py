"""The worker API from a plain subprocess that finds the keeper through $TIDE_FLASHBOOT_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flashboot import Keeper, write_image
from flashboot._store import HostStore

from ..conftest import numpy_model

ROOT = str(Path(__file__).resolve().parents[3])

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    import flashboot

    def never():
        raise SystemExit("the source was read: no tier held the model")

    weights = flashboot.load("model-a", source=never, device="cpu")
    stats = flashboot.last_load_stats()
    digest = {n: hashlib.sha256(t.contiguous().view(-1).view(__import__("torch").uint8).numpy()).hexdigest()
              for n, t in weights.items()}
    print(json.dumps({"tier": stats.tier, "fingerprint": stats.fingerprint, "digest": digest,
                      "stages": [s.stage for s in stats.stages]}))
    """
)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TIDE_FLASHBOOT_DIR"}
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def test_import_does_not_import_torch() -> None:
    code = "import sys, flashboot; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env({}), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_subprocess_worker_restores_from_t1(keeper: Keeper, tmp_path: Path) -> None:
    import hashlib

    pytest.importorskip("torch")
    sd = numpy_model()
    src = tmp_path / "a.safetensors"
    write_image(str(src), sd)
    fp = keeper.import_image(str(src), model_id="model-a")
    store = HostStore.open(keeper.config.state_dir)
    # Warm T1 the way an earlier worker would have: fill it from T2 (no torch needed here).
    seg = store.reserve_t1(fp, store.image_index(fp).data_bytes)
    assert seg is not None
    with open(store.t2_path(fp), "rb") as f:
        f.seek(store.image_index(fp).data_offset)
        seg.map[:] = f.read(seg.nbytes)
    store.publish_t1(seg, store.image_index(fp), store.header(fp), model_id=None, stamp="")
    seg.map.close()
    assert keeper.holdings().t1 == (fp,)

    out = subprocess.run(
        [sys.executable, "-c", WORKER], env=_env(keeper.env()), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["tier"] == "t1" and report["fingerprint"] == fp
    assert "t1->t0" in report["stages"]
    want = {n: hashlib.sha256(v.tobytes()).hexdigest() for n, v in sd.items()}
    assert report["digest"] == want
    assert not keeper.holdings().models[0].pinned  # the worker exited: its pin went with it
    assert keeper.holdings().t0 == ()  # and its T0 registration is gone
