"""FlashBoot for the workers of ``flashboot: true`` endpoints.

Such a worker gets ``Keeper.env(owner=endpoint)`` from the host's keeper (noded/_flashboot.py): the
keeper records the endpoint with each model the worker loads, which is how the placer learns
which host holds an endpoint's weights.  Containers get the endpoint's own store (its state and
T1 directories) bound read-write at the same paths, and no other endpoint's.  Every stopped
worker, FlashBoot or not, wakes the keeper: the models it held may be evicted now.
"""

from __future__ import annotations

from typing import final

from noded.hooks._protocol import HookHost, PrestartRequest, PrestartResponse
from tide.api.nodes import DesiredWorker

__all__ = ["FlashbootHook"]


@final
class FlashbootHook:
    name = "flashboot"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        self._host = host
        self._keeper = host.flashboot
        self._endpoint = worker.endpoint_id
        self._wanted = worker.flashboot

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        if not self._wanted or self._keeper is None:
            return PrestartResponse()
        env = self._keeper.worker_env(self._endpoint)  # makes sure the endpoint's store exists
        return PrestartResponse(env=env, mounts=self._host.binds(self._keeper.store_paths(self._endpoint)))

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.wake.set()
