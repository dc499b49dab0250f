"""Where webhooks may go: the pure policy (issue 12, SSRF).

A webhook is a request the coordinator makes on a client's behalf, from inside
the cluster's network, carrying the job's input and output.  So by default it
goes only to public addresses over http(s): loopback, link-local, private
(RFC 1918, ULA), CGNAT, "this network", multicast, reserved and documentation
ranges are refused, and so are IPv6 forms that embed such an IPv4 address
(mapped, 6to4, NAT64).  Cloud metadata services are refused whatever the
allowlist says.  Operators open private networks with ``allow_cidrs`` (and
``allow_hosts`` for names that resolve into them).

``check_webhook_url`` is called twice: at /run with no addresses (scheme,
length, literal IPs and obviously internal names: a 400), and at send time with
every address the name resolved to (the sender then connects to those checked
addresses only, so DNS cannot smuggle an internal one in).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import msgspec
import yarl

from tide.api.jobs import MAX_WEBHOOK_URL

__all__ = ["Verdict", "WebhookPolicy", "address_refused", "check_webhook_url"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "169.254.169.123")
)
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookPolicy(msgspec.Struct, frozen=True, kw_only=True):
    allow_cidrs: tuple[str, ...] = ()  # networks webhooks may reach although not public
    allow_hosts: tuple[str, ...] = ()  # names that may resolve into non-public networks
    max_url_length: int = MAX_WEBHOOK_URL

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs]


class Verdict(msgspec.Struct, frozen=True):
    ok: bool
    reason: str = ""  # why not, for the client (a 400) or the log (at send time)


def check_webhook_url(url: str, resolved: Sequence[str] | None, policy: WebhookPolicy) -> Verdict:
    """Whether ``url`` may receive a webhook.  ``resolved``: every address its host
    resolved to (None at /run, before any lookup)."""
    if len(url) > policy.max_url_length:
        return Verdict(False, f"is {len(url)} characters; the limit is {policy.max_url_length}")
    try:
        parsed = yarl.URL(url)  # the parser aiohttp will connect with: no parser differential
    except (ValueError, TypeError):
        return Verdict(False, "is not a URL")
    if parsed.scheme not in ("http", "https"):
        return Verdict(False, "must be an http:// or https:// URL")
    host = (parsed.raw_host or "").rstrip(".").lower()
    if not host:
        return Verdict(False, "has no host")
    literal = _literal_ip(host)
    if literal is not None:
        return _check_address(literal, policy)
    named = host in policy.allow_hosts
    if not named and (host == "localhost" or host in _METADATA_NAMES or host.endswith(_INTERNAL_SUFFIXES)):
        return Verdict(False, f"names an internal host ({host}); [webhooks] allow-hosts can allow it")
    for raw in resolved or ():
        verdict = _check_address(ipaddress.ip_address(raw.split("%", 1)[0]), policy, named=named)
        if not verdict.ok:
            return Verdict(False, f"resolves to a refused address: {host} -> {raw} {verdict.reason}")
    return Verdict(True)


def address_refused(address: Address, policy: WebhookPolicy, *, named: bool = False) -> str:
    """Why a webhook may not connect to ``address`` ("" when it may)."""
    return _check_address(address, policy, named=named).reason


def _check_address(address: Address, policy: WebhookPolicy, *, named: bool = False) -> Verdict:
    for inner in _embedded(address):
        if inner in _METADATA:
            return Verdict(False, f"({inner} is a cloud metadata service)")
    if named or any(address in net for net in policy.networks()):
        return Verdict(True)
    for inner in _embedded(address):
        if not _public(inner):
            return Verdict(False, f"({inner} is not public; [webhooks] allow-cidrs opens private networks)")
    return Verdict(True)


def _public(a: Address) -> bool:
    if a.is_multicast or a.is_unspecified or a.is_reserved or a.is_loopback or a.is_link_local:
        return False
    if isinstance(a, ipaddress.IPv4Address) and a in _CGNAT:
        return False
    if isinstance(a, ipaddress.IPv6Address) and a.is_site_local:
        return False
    return a.is_global


def _embedded(a: Address) -> list[Address]:
    """The address and any IPv4 address an IPv6 one carries (mapped, 6to4, NAT64)."""
    out: list[Address] = [a]
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            out.append(a.ipv4_mapped)
        if a.sixtofour is not None:
            out.append(a.sixtofour)
        if a in _NAT64:
            out.append(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
    return out


def _literal_ip(host: str) -> Address | None:
    """An IP literal, including the forms ``inet_aton`` (and so getaddrinfo) reads as one:
    ``2130706433``, ``0x7f.1``, ``0177.0.0.1``."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
