"""noded's side of FlashBoot: the host's keeper.

``FlashbootHost`` wraps the host's ``flashboot.Keeper``: started once in a thread when the agent
starts (it repairs the index against the files, so a restarted noded adopts T1 and T2), kept within
its budgets by a loop (after each worker stop and every ``enforce_s``), and asked for its holdings
on every heartbeat.  Each endpoint has a store of its own (``flashboot/_owners.py``).  What a
worker of a ``flashboot: true`` endpoint gets from it (the keeper's env, its endpoint's store
bound into containers) is a worker hook's job (noded/hooks/_flashboot.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from flashboot import Holdings, Keeper, KeeperConfig, t1_advice
from tide.api.errors import TideError
from tide.api.nodes import FlashbootHolding

__all__ = ["FlashbootHost", "holdings_inventory"]

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

    def store_paths(self, endpoint_id: str) -> tuple[str, ...]:
        """The endpoint's own store (state and T1 dirs), never another endpoint's.  No I/O:
        ``worker_env`` has made sure the store exists."""
        return self.keeper.paths(endpoint_id) if self.ready else ()

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
