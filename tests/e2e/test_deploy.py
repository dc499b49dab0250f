"""``tide deploy`` end to end on ``tide dev``: a decorated function becomes an endpoint the real
runpod client calls; a version whose import fails on the worker stays out (the old one serves,
the report says why); a good version takes the traffic; an unchanged one is a no-op."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess
from tests.fixtures.coordinator import REPO_ROOT, http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

_APP = """\
import os
import tide

{extra}
app = tide.App("hello")


@app.queue(workers=(0, 1), idle_timeout=120, preflight={{"name": "canary"}})
def greet(name: str) -> dict:
    return {{"hello": name, "version": {version}}}
"""
# Fails only where the bundle runs (a module the worker lacks), so the local import passes.
_BROKEN = 'if os.environ.get("TIDE_BUNDLE_DIR"):\n    import not_installed_on_workers  # noqa: F401'


@pytest.fixture(scope="module")
def dev() -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(nodes=1, gpus="2xH100-80GB")
    try:
        yield proc.start()
    finally:
        proc.cleanup()


def write_app(root: Path, version: int, *, extra: str = "") -> Path:
    d = root / f"app-{len(list(root.iterdir()))}"  # a new directory each time: same bytes, same bundle
    d.mkdir()
    (d / "app.py").write_text(_APP.format(version=version, extra=extra))
    return d / "app.py"


def deploy(dev: DevClusterProcess, app: Path) -> tuple[int, list[dict[str, Any]], str]:
    argv = [sys.executable, "-m", "tide.cli.main", "deploy", str(app), "--json", "--preflight-timeout", "90"]
    argv += ["--url", dev.url, "--api-key", dev.api_key]
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env, cwd=app.parent)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else [], r.stderr


def call(dev: DevClusterProcess, name: str) -> Any:
    import runpod

    runpod.endpoint_url_base = dev.url + "/v2"
    return runpod.Endpoint("hello.greet", api_key=dev.api_key).run_sync({"name": name}, timeout=60)


def test_deploy_preflight_and_traffic(dev: DevClusterProcess, tmp_path: Path) -> None:
    code, rows, err = deploy(dev, write_app(tmp_path, 1))
    assert code == 0, err
    assert [r["action"] for r in rows] == ["created"] and rows[0]["preflight"]["ok"], rows
    assert rows[0]["preflight"]["stage"] == "call"
    assert call(dev, "ada") == {"hello": "ada", "version": 1}

    code, rows, err = deploy(dev, write_app(tmp_path, 1))  # same bytes: the same bundle
    assert code == 0 and rows[0]["action"] == "unchanged", (rows, err)

    code, rows, err = deploy(dev, write_app(tmp_path, 2, extra=_BROKEN))
    assert code == 1 and rows[0]["action"] == "kept", (rows, err)
    pf = rows[0]["preflight"]
    assert not pf["ok"] and pf["stage"] == "import" and "not_installed_on_workers" in pf["error"], pf
    assert call(dev, "bob") == {"hello": "bob", "version": 1}  # v1 still serves
    assert http_json("GET", f"{dev.url}/admin/v1/endpoints/hello.greet.canary", key=dev.api_key)[0] == 404

    code, rows, err = deploy(dev, write_app(tmp_path, 2))
    assert code == 0 and rows[0]["action"] == "updated", (rows, err)
    wait_until(lambda: call(dev, "cy") == {"hello": "cy", "version": 2}, timeout=60, what="v2 to serve")


def test_local_import_error_is_reported_before_upload(dev: DevClusterProcess, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("import tide\nraise RuntimeError('boom at import')\n")
    code, _rows, err = deploy(dev, app)
    assert code == 1 and "boom at import" in err and "Traceback" not in err
