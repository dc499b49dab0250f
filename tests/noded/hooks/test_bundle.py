"""The bundle hook and the host's bundle cache: checked, read-only, built once per host."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import tide.sdk
from noded._bundles import BundleCache, unpack
from noded.hooks import BundleHook, HookHost, PrestartRequest
from noded.runtime import WorkerSpec
from tide.api.bundles import bundle_image
from tide.api.errors import InvalidArgument
from tide.api.nodes import DesiredWorker
from tide.sdk import pack


def _bundle(tmp: Path) -> tuple[str, bytes]:
    src = tmp / "src"
    src.mkdir()
    (src / "app.py").write_text("X = 1\n")
    b = pack(src, [src / "app.py"])
    return b.sha256, b.data


def _wheel(tmp: Path) -> Path:
    """A tiny pure wheel, built by hand, so the install needs no network."""
    path = tmp / "tidetestpkg-0.1-py3-none-any.whl"
    files = {
        "tidetestpkg/__init__.py": b"VALUE = 42\n",
        "tidetestpkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tidetestpkg\nVersion: 0.1\n",
        "tidetestpkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tidetestpkg-0.1.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("tidetestpkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_unpack_checks_the_hash_and_refuses_odd_members(tmp_path: Path) -> None:
    sha, data = _bundle(tmp_path)
    with pytest.raises(InvalidArgument, match="refusing to run them"):
        unpack(data + b"x", sha, tmp_path / "bad")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.py")
        tar.addfile(info, io.BytesIO(b""))
    evil = buf.getvalue()
    with pytest.raises(InvalidArgument, match="not a plain file path"):
        unpack(evil, hashlib.sha256(evil).hexdigest(), tmp_path / "evil")
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "evil").exists()
    unpack(data, sha, tmp_path / "ok")
    assert (tmp_path / "ok" / "app.py").read_text() == "X = 1\n"
    assert not os.access(tmp_path / "ok", os.W_OK) or os.geteuid() == 0
    assert (tmp_path / "ok" / "app.py").stat().st_mode & 0o777 == 0o444


def test_code_is_fetched_once_and_env_built_once(tmp_path: Path) -> None:
    sha, data = _bundle(tmp_path)
    fetches: list[str] = []

    async def fetch(s: str) -> bytes:
        fetches.append(s)
        return data

    cache = BundleCache(str(tmp_path / "cache"), fetch, python=sys.executable)
    wheel = str(_wheel(tmp_path))

    async def go() -> tuple[list[str], list[str]]:
        codes = await asyncio.gather(*(cache.ensure_code(sha) for _ in range(3)))
        envs = [await cache.ensure_env([wheel]), await cache.ensure_env([wheel])]
        return list(codes), envs

    codes, envs = asyncio.run(go())
    assert fetches == [sha] and set(codes) == {cache.code_dir(sha)}
    assert envs[0] == envs[1] == cache.env_dir([wheel])
    assert (Path(envs[0]) / "tidetestpkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert asyncio.run(cache.ensure_env([])) == ""


def test_an_unresolvable_dependency_set_says_so(tmp_path: Path) -> None:
    async def fetch(s: str) -> bytes:
        raise AssertionError

    cache = BundleCache(str(tmp_path / "cache"), fetch, python=sys.executable)
    with pytest.raises(
        InvalidArgument, match=r"installing .*missing-1.0-py3-none-any.whl failed .*fix dependencies="
    ):
        asyncio.run(cache.ensure_env([str(tmp_path / "missing-1.0-py3-none-any.whl")]))
    assert not Path(cache.env_dir([str(tmp_path / "missing-1.0-py3-none-any.whl")])).exists()


def _hook(runtime: str, cache: BundleCache | None, env: dict[str, str] | None = None) -> BundleHook:
    host = HookHost(
        runtime=runtime, on_change=lambda: None, bundles=cache, bundle_base_image="reg.local/base:1"
    )
    sha = "a" * 64
    worker = DesiredWorker(
        worker_id="w1", endpoint_id="ep", revision=1, image=bundle_image(sha), env=env or {}
    )
    return BundleHook(host, worker)


def test_prestart_runs_the_bundle_on_the_base(tmp_path: Path) -> None:
    async def fetch(s: str) -> bytes:
        return b""

    cache = BundleCache(str(tmp_path), fetch, python="/usr/bin/python3")
    spec = WorkerSpec(id="w1", image=bundle_image("a" * 64))
    got = _hook("process", cache, {"TIDE_DEPENDENCIES": json.dumps(["x==1"])}).prestart(
        PrestartRequest(spec=spec)
    )
    assert got.image == "dir://" + cache.code_dir("a" * 64)
    assert got.command == ["/usr/bin/python3", "-u", tide.sdk.WORKER_SCRIPT]
    assert got.env["TIDE_ENV_DIR"] == cache.env_dir(["x==1"]) and got.mounts == []
    got = _hook("containerd", cache).prestart(PrestartRequest(spec=spec))
    assert got.image == "reg.local/base:1" and all(m.read_only for m in got.mounts)
    assert cache.code_dir("a" * 64) in {m.source for m in got.mounts}
    plain = DesiredWorker(worker_id="w2", endpoint_id="ep", revision=1, image="dir:///srv/x")
    assert (
        BundleHook(HookHost(runtime="process", on_change=lambda: None, bundles=cache), plain).prestart(
            PrestartRequest(spec=WorkerSpec(id="w2", image="dir:///srv/x"))
        )
        == type(got)()
    )


def test_prepare_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    async def fetch(s: str) -> bytes:
        raise AssertionError("nothing is fetched for a worker that cannot run")

    cache = BundleCache(str(tmp_path), fetch, python=sys.executable)
    with pytest.raises(InvalidArgument, match="no bundle cache"):
        asyncio.run(_hook("process", None).prepare())
    with pytest.raises(InvalidArgument, match="JSON list"):
        asyncio.run(_hook("process", cache, {"TIDE_DEPENDENCIES": "numpy"}).prepare())
    with pytest.raises(InvalidArgument, match="install them into the base image"):
        asyncio.run(_hook("containerd", cache, {"TIDE_DEPENDENCIES": '["numpy"]'}).prepare())
