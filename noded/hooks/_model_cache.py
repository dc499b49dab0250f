"""The model cache for the workers of endpoints that name a ``model``.

Before each start (``prepare``) the host's ``ModelCache`` makes the model present on local disk:
from this host's tier, else the region's store, else global, else its source
(tiered_storage/_model_cache.py).  The worker gets ``$TIDE_MODEL_PATH`` (and, for ``hf://``
models, ``HF_HOME``/``HF_HUB_CACHE`` with ``HF_HUB_OFFLINE=1``, so ``from_pretrained`` finds it
offline); containers get the model's directory bound read-only.  The model is pinned while the
worker lives (the host tier never evicts it under a running worker).  How long the fetch took
and which tier served it go into the worker's report (``WorkerReport.model``): a cold-start
stage, not billed.  A model that does not resolve or does not fit fails the start with the
cache's message, retried with backoff like any failed start.
"""

from __future__ import annotations

import time
from typing import final

import msgspec

from noded.hooks._protocol import HookHost, PrestartRequest, PrestartResponse
from tide.api.nodes import DesiredWorker, ModelFetch, WorkerReport
from tiered_storage import ModelRef, parse_model_ref

__all__ = ["ModelCacheHook"]


@final
class ModelCacheHook:
    name = "model-cache"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        self._host = host
        self._cache = host.models if worker.model else None
        self._ref: ModelRef | None = None
        self._url = worker.model
        self._pinned = False
        self.fetch: ModelFetch | None = None

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        if self._cache is None:
            return PrestartResponse()
        self._ref = parse_model_ref(self._url)  # the coordinator checked it; an old one may not have
        where = str(self._cache.model_dir(self._ref))
        mounts = self._host.binds([where])
        return PrestartResponse(
            env=self._cache.env(self._ref),
            mounts=[msgspec.structs.replace(m, read_only=True) for m in mounts],
        )

    async def prepare(self) -> None:
        if self._cache is None or self._ref is None:
            return
        if not self._pinned:  # before the fetch: making room for another model must not evict it
            self._cache.pin(self._ref.id)
            self._pinned = True
        started = time.time()
        staged = await self._cache.ensure(self._ref)
        self.fetch = ModelFetch(
            model_id=staged.model_id,
            tier=staged.tier,
            nbytes=staged.nbytes,
            seconds=staged.seconds,
            started_at=started,
        )
        self._host.on_change()

    def report(self, report: WorkerReport) -> WorkerReport:
        return msgspec.structs.replace(report, model=self.fetch) if self.fetch is not None else report

    async def stop(self) -> None:
        if self._pinned and self._cache is not None and self._ref is not None:
            self._cache.unpin(self._ref.id)
            self._pinned = False
