"""The host's bundle cache: code bundles unpacked read-only, and one environment per dependency set.

Layout under ``root`` (noded's ``<state-dir>/bundles``)::

    code/<sha256>/             a bundle, unpacked, files 0444 and directories 0555
    envs/<hash>/               ``pip install --target`` of one dependency set (uv when on PATH)
    envs/<hash>.log            the installer's output, kept for a failed set too

Both are built once per host under a per-key lock, in a temp directory renamed into place, so a
crash never leaves half of one and every worker after the first finds it ready.  A fetched bundle
is checked against its SHA-256 before anything is unpacked, and a member that is not a regular
file with a plain relative path is refused (a tar is hostile input).  The set's hash covers the
requirements, the interpreter and the base, so another Python or image gets its own environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import final

from tide.api.errors import InvalidArgument

__all__ = ["BundleCache", "env_hash", "unpack"]

_INSTALL_TIMEOUT_S = 900.0


def env_hash(dependencies: Sequence[str], python: str, base: str = "") -> str:
    """The dependency set's id: its sorted requirements, the interpreter and the base image."""
    blob = json.dumps([sorted(set(dependencies)), python, sys.version, base])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def unpack(data: bytes, sha: str, dest: Path) -> None:
    """Check ``data`` against ``sha`` and unpack it read-only at ``dest`` (atomically)."""
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise InvalidArgument(f"bundle {sha}: the fetched bytes hash to {got}; refusing to run them")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{sha[:12]}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar.getmembers():
                p = PurePosixPath(m.name)
                if not m.isfile() or p.is_absolute() or ".." in p.parts or not m.name:
                    raise InvalidArgument(f"bundle {sha}: member {m.name!r} is not a plain file path")
            tar.extractall(tmp, filter="data")
        _read_only(tmp)
        os.rename(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise


def _read_only(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = Path(dirpath, f)
            p.chmod(0o555 if p.stat().st_mode & 0o100 else 0o444)
        Path(dirpath).chmod(0o555)


def _remove(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        Path(dirpath).chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


@final
class BundleCache:
    """One per host (the agent builds it); hooks call ``ensure_code`` and ``ensure_env``."""

    def __init__(self, root: str, fetch: Callable[[str], Awaitable[bytes]], *, python: str) -> None:
        self.root = Path(root)
        self.python = python
        self._fetch = fetch
        self._locks: dict[str, asyncio.Lock] = {}

    def code_dir(self, sha: str) -> str:
        return str(self.root / "code" / sha)

    def env_dir(self, dependencies: Sequence[str]) -> str:
        """Where this set's packages go ("" for no dependencies)."""
        return str(self.root / "envs" / env_hash(dependencies, self.python)) if dependencies else ""

    async def ensure_code(self, sha: str) -> str:
        dest = Path(self.code_dir(sha))
        async with self._locks.setdefault("code/" + sha, asyncio.Lock()):
            if not await asyncio.to_thread(dest.is_dir):
                data = await self._fetch(sha)
                await asyncio.to_thread(unpack, data, sha, dest)
        return str(dest)

    async def ensure_env(self, dependencies: Sequence[str]) -> str:
        if not dependencies:
            return ""
        dest = Path(self.env_dir(dependencies))
        async with self._locks.setdefault("env/" + dest.name, asyncio.Lock()):
            if not await asyncio.to_thread(dest.is_dir):
                await self._install(list(dependencies), dest)
        return str(dest)

    def _installer(self, deps: list[str], target: Path) -> list[str]:
        uv = shutil.which("uv")  # uv when the host has it: the same install, many times faster
        if uv:
            return [uv, "pip", "install", "--python", self.python, "--target", str(target), *deps]
        pip = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        return [*pip, "--target", str(target), *deps]

    async def _install(self, deps: list[str], dest: Path) -> None:
        tmp = Path(await asyncio.to_thread(_temp_dir, dest))
        log_path = dest.with_suffix(".log")
        try:
            code = await _run_logged(self._installer(deps, tmp), log_path)
            if code is None:
                raise InvalidArgument(f"installing {' '.join(deps)} took over {_INSTALL_TIMEOUT_S:.0f} s")
            if code != 0:
                tail = (await asyncio.to_thread(_tail, log_path)) or "no output"
                raise InvalidArgument(
                    f"installing {' '.join(deps)} failed (exit {code}): {tail}; "
                    "fix dependencies= and deploy again"
                )
            await asyncio.to_thread(os.rename, tmp, dest)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)


def _temp_dir(dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-")


def _tail(path: Path, lines: int = 6) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


async def _run_logged(argv: list[str], log_path: Path) -> int | None:
    """Run ``argv`` with its output in ``log_path``; its exit code, or None after the timeout."""
    out = await asyncio.to_thread(open, log_path, "wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            return await asyncio.wait_for(proc.wait(), _INSTALL_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
    finally:
        out.close()
