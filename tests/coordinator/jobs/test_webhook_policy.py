"""The webhook policy (pure) and its send-time resolver: properties over random
addresses, the known SSRF tricks, and DNS that resolves to an internal address."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from coordinator.jobs import WebhookPolicy, check_webhook_url
from coordinator.jobs._bounds import MAX_ERROR_BYTES, bounded_error, json_too_deep
from coordinator.jobs._webhook_guard import GuardedResolver

DEFAULT = WebhookPolicy()
INTERNAL = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]
v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def _internal(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(a in ipaddress.ip_network(n) for n in INTERNAL if ipaddress.ip_network(n).version == a.version)


def _url(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"http://{a}/h" if a.version == 4 else f"http://[{a}]/h"


@given(v4)
def test_no_internal_ipv4_is_ever_allowed_by_default(a: ipaddress.IPv4Address) -> None:
    if _internal(a):
        assert not check_webhook_url(_url(a), None, DEFAULT).ok
        # nor hidden in IPv6 (mapped, 6to4, NAT64), nor behind a name
        for wrapped in (f"::ffff:{a}", f"2002:{int(a) >> 16:x}:{int(a) & 0xFFFF:x}::1", f"64:ff9b::{a}"):
            assert not check_webhook_url(_url(ipaddress.IPv6Address(wrapped)), None, DEFAULT).ok
        assert not check_webhook_url("https://example.com/h", ["93.184.216.34", str(a)], DEFAULT).ok


@given(v4, st.integers(0, 32))
def test_the_allowlist_opens_exactly_its_networks(a: ipaddress.IPv4Address, bits: int) -> None:
    net = ipaddress.ip_network(f"{a}/{bits}", strict=False)
    policy = WebhookPolicy(allow_cidrs=(str(net),))
    if str(a) not in ("169.254.169.254", "100.100.100.200", "169.254.170.2", "169.254.169.123"):
        assert check_webhook_url(_url(a), None, policy).ok
    assert (
        check_webhook_url("https://x.example/h", [str(a)], policy).ok
        == check_webhook_url(_url(a), None, policy).ok
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://localhost/",
        "http://app.localhost/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///x",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_known_tricks_are_refused(url: str) -> None:
    assert not check_webhook_url(url, None, DEFAULT).ok


def test_metadata_stays_refused_whatever_the_allowlist() -> None:
    everything = WebhookPolicy(allow_cidrs=("0.0.0.0/0", "::/0"), allow_hosts=("metadata.google.internal",))
    assert not check_webhook_url("http://169.254.169.254/", None, everything).ok
    assert not check_webhook_url("http://metadata.google.internal/", ["169.254.169.254"], everything).ok
    assert check_webhook_url("http://10.1.1.1/", None, everything).ok


def test_public_urls_pass() -> None:
    assert check_webhook_url("https://hooks.example.com/x?y=1", None, DEFAULT).ok
    assert check_webhook_url(
        "https://hooks.example.com/x", ["93.184.216.34", "2606:2800:220:1::1"], DEFAULT
    ).ok
    hosts = WebhookPolicy(allow_hosts=("hooks.corp",))
    assert check_webhook_url("http://hooks.corp/x", ["10.0.0.5"], hosts).ok


class _Fake(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_refuses_names_that_resolve_inside() -> None:
    fake = _Fake({"evil.example": ["93.184.216.34", "127.0.0.1"], "ok.example": ["93.184.216.34"]})
    resolver = GuardedResolver(DEFAULT, fake)
    assert [r["host"] for r in await resolver.resolve("ok.example", 80)] == ["93.184.216.34"]
    with pytest.raises(OSError, match="refused"):
        await resolver.resolve("evil.example", 80)


def test_worker_errors_are_cut_and_say_so() -> None:
    assert bounded_error("short") == "short"
    assert bounded_error({"a": 1}) == {"a": 1}
    cut = bounded_error("e" * (2 << 20))
    assert isinstance(cut, str) and len(cut.encode()) <= MAX_ERROR_BYTES and "limit" in cut
    assert len(bounded_error({"trace": "x" * (1 << 20)}).encode()) <= MAX_ERROR_BYTES


def test_json_depth() -> None:
    shallow = [[1, 2]] * 500
    assert not json_too_deep(b"[" * 1000, lambda: shallow)
    deep: list[object] = []
    node = deep
    for _ in range(200):
        node.append([])
        node = node[0]  # type: ignore[assignment]
    assert json_too_deep(b"[" * 200, lambda: deep)
