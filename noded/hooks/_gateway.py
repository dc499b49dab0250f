"""The worker gateway (noded/_gateway.py): the worker's RUNPOD_WEBHOOK_* URLs point at it.

The coordinator hands out URLs of the replica that made the desired state; the gateway on this
host forwards them to any healthy replica, so a worker keeps working through one replica's death.
"""

from __future__ import annotations

from typing import final

from noded._gateway import gateway_env
from noded.hooks._protocol import HookHost, PrestartRequest, PrestartResponse
from tide.api.nodes import DesiredWorker

__all__ = ["GatewayHook"]


@final
class GatewayHook:
    name = "gateway"

    def __init__(self, host: HookHost, worker: DesiredWorker) -> None:
        self._base = host.gateway

    def prestart(self, req: PrestartRequest) -> PrestartResponse:
        """The spec's RUNPOD_WEBHOOK_* URLs, pointed at the gateway (none when it is off)."""
        if not self._base:
            return PrestartResponse()
        rewritten = gateway_env(req.spec.env, self._base)
        return PrestartResponse(env={k: v for k, v in rewritten.items() if req.spec.env.get(k) != v})
