"""noded's side of FlashBoot and of cold-start reports.

``FlashbootHost`` wraps the host's ``flashboot.Keeper``: started once in a thread when the agent
starts (it repairs the index against the files, so a restarted noded adopts T1 and T2), kept within
its budgets by a loop (after each worker stop and every ``enforce_s``), and asked for its holdings
on every heartbeat.  Workers of ``flashboot: true`` endpoints get ``Keeper.env(owner=endpoint)``:
the keeper records the endpoint with each model they load, which is how the placer learns which
host holds an endpoint's weights.  Each endpoint has a store of its own (``flashboot/_owners.py``):
its containers get that store's two directories bound read-write at the same paths (the config the
worker reads names host paths), and no other endpoint's.

Every worker also gets a report directory of its own (``$TIDE_WORKER_REPORT_DIR``): the worker
side of flashboot writes its boot report there and the runner forwards it (noded/_runner.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Callable

from flashboot import ENV_REPORT_DIR, Holdings, Keeper, KeeperConfig, t1_advice
from noded.runtime import Mount
from tide.api.errors import TideError
from tide.api.nodes import FlashbootHolding

__all__ = ["FlashbootHost", "ReportDirs", "holdings_inventory"]

log = logging.getLogger("tide.noded.flashboot")


def holdings_inventory(h: Holdings) -> list[FlashbootHolding]:
    """The keeper's holdings as the node API reports them."""
    return [
        FlashbootHolding(
            fingerprint=m.fingerprint,
            model_ids=list(m.model_ids),
            endpoints=list(m.owners),
            tiers=list(m.tiers),
            nbytes=m.data_bytes,
        )
        for m in h.models
    ]


class FlashbootHost:
    def __init__(
        self,
        config: KeeperConfig,
        *,
        enforce_s: float = 30.0,
        live_endpoints: Callable[[], set[str]] = set,
        advice_level: int = logging.WARNING,
    ) -> None:
        self.keeper = Keeper(config)
        self.advice_level = advice_level
        self.enforce_s = enforce_s
        self.live_endpoints = live_endpoints  # endpoints with a worker here: their stores stay
        self.wake = asyncio.Event()  # a worker stopped: its models may now be evicted
        self.ready = False

    async def start(self) -> None:
        """Start the keeper (slow: repairs the index, may evict).  A failure leaves FlashBoot off
        on this host, logged: workers then load their weights from their sources."""
        try:
            await asyncio.to_thread(self.keeper.start)
            self.ready = True
        except (TideError, OSError) as exc:
            log.error("FlashBoot keeper did not start (%s); workers load weights from source", exc)
            return
        backing = self.keeper.t1_backing()
        if hint := t1_advice(backing):
            log.log(self.advice_level, "%s", hint)
        else:
            log.info("FlashBoot T1 on %s (%s, huge=%s)", backing.mount_point, backing.fstype, backing.huge)

    def worker_env(self, endpoint_id: str) -> dict[str, str]:
        return self.keeper.env(owner=endpoint_id) if self.ready else {}

    def mounts(self, endpoint_id: str) -> list[Mount]:
        """The endpoint's own store (state and T1 dirs), never another endpoint's.  No I/O:
        ``worker_env`` has made sure the store exists."""
        return [Mount(source=p, target=p) for p in self.keeper.paths(endpoint_id)] if self.ready else []

    async def holdings(self) -> list[FlashbootHolding]:
        if not self.ready:
            return []
        try:
            return holdings_inventory(await asyncio.to_thread(self.keeper.holdings))
        except (TideError, OSError) as exc:
            log.warning("FlashBoot holdings: %s", exc)
            return []

    async def run(self) -> None:
        """Keep T1 and T2 within budget: after worker stops and every ``enforce_s``."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.enforce_s):
                    await self.wake.wait()
            self.wake.clear()
            if not self.ready:
                continue
            try:
                await asyncio.to_thread(self.keeper.enforce)
                live = self.live_endpoints()
                if gone := await asyncio.to_thread(self.keeper.collect, live):
                    log.info("FlashBoot stores of %d idle endpoints removed: %s", len(gone), gone[:5])
            except (TideError, OSError) as exc:
                log.warning("FlashBoot enforce: %s", exc)


class ReportDirs:
    """One directory per worker under ``root`` ("" = none) for the worker's own reports."""

    def __init__(self, root: str) -> None:
        self.root = root

    def of(self, worker_id: str) -> str:
        return os.path.join(self.root, worker_id) if self.root else ""

    def prepare(self, worker_id: str) -> tuple[dict[str, str], list[Mount]]:
        """Create the worker's directory; its env entry and (for containers) its bind mount."""
        path = self.of(worker_id)
        if not path:
            return {}, []
        os.makedirs(path, exist_ok=True)
        return {ENV_REPORT_DIR: path}, [Mount(source=path, target=path)]

    def remove(self, worker_id: str) -> None:
        if path := self.of(worker_id):
            shutil.rmtree(path, ignore_errors=True)
