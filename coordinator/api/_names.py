"""Node ids: a host's name, as DNS writes one (RFC 1123 labels).

A node id is a store key segment and a URL path segment, so anything else
(``""``, ``a/b``, spaces, control characters) is refused at registration with
a 400 that says the rule.
"""

from __future__ import annotations

import re

import yarl

from tide.api.errors import InvalidArgument

__all__ = ["check_node_address", "check_node_id"]

# Underscores are not in RFC 1123 but are common in real host names (and harmless here).
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def check_node_id(name: str, field: str = "inventory.hostname") -> str:
    """``name`` when it is a valid host name; InvalidArgument naming ``field`` otherwise."""
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise InvalidArgument(
            f"{field} must be a host name: dot-separated labels of 1-63 letters, digits, '-' or '_' "
            f"(not starting or ending with '-'), at most 253 characters; got {name[:80]!r}"
        )
    return name


def check_node_address(address: str, field: str = "address") -> str:
    """``address`` when it is "" or an http(s) origin (``http://host:port``).  The coordinator
    calls ``<address>/v1/workers/...`` with the node's token: a path, query or user part would
    let a node point those calls (and the answers an admin reads) anywhere on a host."""
    if not address:
        return address
    try:
        url = yarl.URL(address)
        ok = url.scheme in ("http", "https") and bool(url.raw_host) and url.port is not None
    except (ValueError, TypeError):
        ok = False
    if not ok or url.raw_user is not None or url.raw_path not in ("", "/") or url.raw_query_string:
        ok = False
    if not ok or url.raw_fragment:
        raise InvalidArgument(
            f"{field} must be the node's http(s) origin, like http://10.0.0.5:8421 (no user, path, "
            f"query or fragment); got {address[:80]!r}"
        )
    return address
