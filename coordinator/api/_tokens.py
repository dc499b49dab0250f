"""The credentials the coordinator mints: worker tokens and node tokens.

All are HMACs under the cluster secret, verifiable without a store read, and each names
the *generation* of what it is for, so that deleting the object kills its tokens:

- ``tw2.<gen>.<mac>``: an assigned worker's token (noded hands it to the worker),
  MAC over ``worker/<ep>/<gen>/<worker>`` where ``gen`` is the endpoint's creation time
  in microseconds.  A re-created endpoint of the same name has another ``gen``.
- ``tw2h.<gen>.<expires>.<mac>``: a token for a worker started by hand (``tide
  worker-token``), MAC over ``hand/<ep>/<gen>/<worker>/<expires>``; no assignment, so
  it carries an expiry (unix seconds) instead.
- ``tn2.<gen>.<mac>``: a node's token, MAC over ``node/<node>/<gen>`` where ``gen`` is
  the node record's registration time in microseconds: ``tide node forget`` (or an
  admin re-registering the host) gives the host a new generation and kills the old token.

The generation travels in the token so the MAC is checked first (a forgery costs one
HMAC, never a wait or a store read) and liveness second, against the view.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

__all__ = [
    "WorkerToken",
    "generation",
    "mint_hand_token",
    "mint_node_token",
    "mint_worker_token",
    "parse_node_token",
    "parse_worker_token",
]


def generation(created_at: float) -> int:
    """An object's generation: its creation time in microseconds (stable across JSON)."""
    return round(created_at * 1_000_000)


def _mac(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def mint_worker_token(secret: bytes, ep: str, gen: int, worker: str) -> str:
    return f"tw2.{gen}.{_mac(secret, f'worker/{ep}/{gen}/{worker}')}"


def mint_hand_token(secret: bytes, ep: str, gen: int, worker: str, expires: int) -> str:
    return f"tw2h.{gen}.{expires}.{_mac(secret, f'hand/{ep}/{gen}/{worker}/{expires}')}"


def mint_node_token(secret: bytes, node: str, gen: int) -> str:
    return f"tn2.{gen}.{_mac(secret, f'node/{node}/{gen}')}"


@dataclass(frozen=True, slots=True)
class WorkerToken:
    gen: int
    expires: int  # 0: an assigned worker's token (valid while assigned)


def _ints(parts: list[str]) -> list[int] | None:
    if not all(p.isdigit() and len(p) < 20 for p in parts):
        return None
    return [int(p) for p in parts]


def parse_worker_token(secret: bytes, token: str, ep: str, worker: str) -> WorkerToken | None:
    """The token's claims if its MAC is valid for (``ep``, ``worker``), else None."""
    if not token.isascii():
        return None
    parts = token.split(".")
    if parts[0] == "tw2" and len(parts) == 3 and (n := _ints(parts[1:2])) is not None:
        expected = mint_worker_token(secret, ep, n[0], worker)
        return WorkerToken(gen=n[0], expires=0) if hmac.compare_digest(token, expected) else None
    if parts[0] == "tw2h" and len(parts) == 4 and (n := _ints(parts[1:3])) is not None:
        expected = mint_hand_token(secret, ep, n[0], worker, n[1])
        return WorkerToken(gen=n[0], expires=n[1]) if hmac.compare_digest(token, expected) else None
    return None


def parse_node_token(secret: bytes, token: str, node: str) -> int | None:
    """The generation the token names if its MAC is valid for ``node``, else None."""
    if not token.isascii():
        return None
    parts = token.split(".")
    if parts[0] != "tn2" or len(parts) != 3 or (n := _ints(parts[1:2])) is None:
        return None
    return n[0] if hmac.compare_digest(token, mint_node_token(secret, node, n[0])) else None
