"""Client TLS for ``EtcdStore``: which endpoints speak TLS, and the one channel to them.

grpc checks the server's certificate against ONE name per channel: the
target's host for a single endpoint, and for several endpoints (an
``ipv4:a,b,c`` target) a string no certificate carries.  So a TLS store that
reaches members on different hosts needs ``server_name``: a name every
member's certificate carries (the Ansible etcd role adds ``DNS:tide-etcd``).
Endpoints that all share one host (a test cluster on 127.0.0.1) default to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
import msgspec

from tide.api.errors import InvalidArgument

__all__ = ["EtcdTls", "open_channel", "plan_endpoints", "unreachable_message"]

_PLAIN: Final = frozenset({"http", "etcd"})
_SECURE: Final = frozenset({"https", "etcds"})


class EtcdTls(msgspec.Struct, frozen=True, kw_only=True):
    """PEM material for a TLS channel to etcd; read once, at startup.

    ``ca`` verifies the members' certificates (None: grpc's bundled public
    roots).  ``cert`` and ``key`` (both or neither) are the client certificate
    that etcd's ``--client-cert-auth`` asks for.  ``server_name`` is the name
    checked in the members' certificates ("": the endpoint's host).
    """

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str = ""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("etcd TLS: a client certificate needs its key, and a key its certificate")

    def __repr__(self) -> str:  # never print the private key
        return (
            f"EtcdTls(ca={'set' if self.ca else 'system roots'}, "
            f"client_cert={'set' if self.cert else 'none'}, server_name={self.server_name!r})"
        )


def _host_port(endpoint: str) -> tuple[str, str, int]:
    """(scheme or "", host, port) of "scheme://host:port" or "host:port"."""
    scheme = endpoint.partition("://")[0] if "://" in endpoint else ""
    parts = urlsplit(endpoint if scheme else f"http://{endpoint}")
    if scheme and scheme not in _PLAIN | _SECURE:
        raise InvalidArgument(f"etcd endpoint {endpoint!r}: scheme must be http, https, etcd or etcds")
    if not parts.hostname:
        raise InvalidArgument(f"etcd endpoint {endpoint!r} has no host")
    return scheme, parts.hostname, parts.port or 2379


def plan_endpoints(
    endpoints: Sequence[str], tls: EtcdTls | None
) -> tuple[list[tuple[str, int]], EtcdTls | None]:
    """(host, port) per endpoint, and the TLS to use (None: plaintext).

    An endpoint's scheme decides (https/etcds: TLS, with public roots unless
    ``tls`` says otherwise); bare "host:port" endpoints follow ``tls``.
    Mixing plaintext and TLS endpoints, or TLS settings for plaintext
    endpoints, is an error rather than a silent downgrade.
    """
    parsed = [_host_port(e) for e in endpoints]
    schemes = {s for s, _, _ in parsed if s}
    plain, secure = bool(schemes & _PLAIN), bool(schemes & _SECURE)
    if plain and secure:
        raise InvalidArgument(f"etcd endpoints mix plaintext and TLS: {list(endpoints)}")
    if plain and tls is not None:
        raise InvalidArgument(f"TLS settings given for plaintext etcd endpoints {list(endpoints)}")
    hosts = [(h, p) for _, h, p in parsed]
    if not secure and tls is None:
        return hosts, None
    tls = tls or EtcdTls()
    if not tls.server_name and len(hosts) > 1:
        names = {h for h, _ in hosts}
        if len(names) > 1:
            raise InvalidArgument(
                f"TLS to several etcd hosts ({', '.join(sorted(names))}) needs a server name that every "
                "member's certificate carries (store.server-name): one grpc channel checks one name"
            )
        tls = msgspec.structs.replace(tls, server_name=names.pop())
    return hosts, tls


def open_channel(target: str, tls: EtcdTls | None, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
    """The store's one channel: plaintext as before, or TLS with ``tls``."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    opts = list(options)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, creds, options=opts)


def unreachable_message(endpoints: Sequence[tuple[str, int]], tls: EtcdTls | None, details: str) -> str:
    """Why no connection: grpc's last connect error, and for TLS what to check."""
    where = ",".join(f"{h}:{p}" for h, p in endpoints)
    msg = f"etcd at {where} unreachable{' over TLS' if tls else ''}: {details}"
    if tls is None:
        # a TLS-only listener closes a plaintext connection at once
        return f"{msg} (if etcd serves TLS, use etcds://)" if "Socket closed" in details else msg
    name = tls.server_name or "the endpoint's host"
    return (
        f"{msg} (check that the CA signed etcd's certificates, that they name {name}, and that etcd "
        f"accepts the client certificate{'' if tls.cert else ': none is configured'})"
    )
