"""Send-time enforcement of the webhook policy: a resolver for aiohttp that
refuses a name when any address it resolves to is refused.

aiohttp connects to the addresses its resolver returns, so the addresses
checked here are the ones connected to: a name cannot resolve to a public
address for the check and to an internal one for the connection.  IP literals
skip the resolver in aiohttp; ``WebhookSender`` checks those itself with
``check_webhook_url`` before each attempt, and follows no redirects.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from coordinator.jobs._webhook_policy import WebhookPolicy, address_refused

__all__ = ["GuardedResolver"]

log = logging.getLogger("tide.coordinator.webhooks")


class GuardedResolver(AbstractResolver):
    """Resolves like ``inner`` (default: getaddrinfo in a thread); raises OSError, which
    aiohttp reports as a connection error, when an address is refused by ``policy``."""

    def __init__(self, policy: WebhookPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        named = host.rstrip(".").lower() in self._policy.allow_hosts
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            if reason := address_refused(address, self._policy, named=named):
                log.warning("webhook to %s refused: it resolves to %s %s", host, address, reason)
                raise OSError(f"webhook host {host} resolves to a refused address {address} {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()
