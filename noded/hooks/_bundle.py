"""Code bundles (``tide deploy``): a worker of a ``bundle://<sha>`` endpoint runs on a long-lived base.

No image is built: under the process runtime the base is noded's own Python (the prewarm pool's
zygote forks it, runpod already imported); under containerd it is ``bundle_base_image``.  The
bundle is unpacked once per host, read-only (noded/_bundles.py), and the worker runs Tide's
runpod-compatible loop (tide/sdk/_worker.py) over it with ``$TIDE_ENTRY``.  Dependencies
(``$TIDE_DEPENDENCIES``, a JSON list) are installed once per host per set, before the first
worker of that set starts, never per cold start.  Containers get the bundle, the SDK and the
environment bound read-only at the same paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import final

import tide.sdk
from noded.hooks._protocol import HookHost, PrestartRequest, PrestartResponse
from noded.runtime import Mount
from tide.api.bundles import bundle_sha
from tide.api.errors import InvalidArgument
from tide.api.nodes import DesiredWorker

__all__ = ["BundleHook"]

# The directory holding the `tide` package: the worker loop imports the user's module, which
# imports `tide`, and must get this host's copy whatever the base has installed.
_SDK_ROOT = str(Path(tide.sdk.__file__).resolve().parents[2])


def _dependencies(raw: str) -> list[str]:
    try:
        deps = json.loads(raw) if raw else []
    except ValueError:
        deps = None
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InvalidArgument(f"TIDE_DEPENDENCIES must be a JSON list of requirements, not {raw[:200]!r}")
    return sorted(set(deps))


@final
class BundleHook:
    name = "bundle"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        self._host = host
        self._cache = host.bundles
        self._sha = bundle_sha(worker.image)
        self._raw_deps = worker.env.get("TIDE_DEPENDENCIES", "")

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        if not self._sha or self._cache is None:
            return PrestartResponse()  # no bundle cache: the runtime refuses the bundle:// image
        code = self._cache.code_dir(self._sha)
        try:  # a bad list fails the start in prepare, with the message; never the whole plan here
            deps = _dependencies(self._raw_deps)
        except InvalidArgument:
            deps = []
        env_dir = self._cache.env_dir(deps)
        env = {"TIDE_BUNDLE_DIR": code, "TIDE_ENV_DIR": env_dir, "TIDE_SDK_PATH": _SDK_ROOT}
        if self._host.runtime != "containerd":
            command = [self._cache.python, "-u", tide.sdk.WORKER_SCRIPT]
            return PrestartResponse(env=env, image="dir://" + code, command=command)
        paths = [code, _SDK_ROOT, *([env_dir] if env_dir else [])]
        mounts = [Mount(source=p, target=p, read_only=True) for p in paths]
        image = self._host.bundle_base_image or req.spec.image
        return PrestartResponse(
            env=env, mounts=mounts, image=image, command=["python", "-u", tide.sdk.WORKER_SCRIPT]
        )

    async def prepare(self) -> None:
        if not self._sha:
            return
        if self._cache is None:
            raise InvalidArgument("this host keeps no bundle cache: code bundles cannot run here")
        if self._host.runtime == "containerd" and not self._host.bundle_base_image:
            raise InvalidArgument("set noded's bundle base image to run code bundles under containerd")
        deps = _dependencies(self._raw_deps)
        if deps and self._host.runtime == "containerd":
            raise InvalidArgument("dependencies= under containerd: install them into the base image for now")
        await self._cache.ensure_code(self._sha)
        await self._cache.ensure_env(deps)
