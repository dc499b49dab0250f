"""The token secret: the HMAC key behind every worker and node token.

Whoever holds it can mint a token for any worker or host, so it lives in a file
on the coordinators (``[auth] token-secret-file``, mode 0600, read once at
startup), never in etcd, where every etcd backup and every etcd client
certificate would carry it.  Every replica must read the same file (the
Ansible coordinator role distributes one).

Without the key, the legacy behaviour stays: the first replica creates a
random secret at ``/tide/secret`` in etcd and the others read it, with a
warning at every start that says how to move.  With the key set and a legacy
secret still in etcd, the file wins: tokens minted with the etcd secret stop
verifying (noded re-registers by itself; workers started with old tokens must
be restarted), see docs/secrets.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from coordinator._schema import keys
from coordinator.store import Compare, Put, Store
from tide.api.errors import InvalidArgument

__all__ = ["MIN_SECRET_CHARS", "check_secret", "ensure_token_secret", "read_token_secret", "resolve_secret"]

log = logging.getLogger("tide.coordinator")

MIN_SECRET_CHARS: Final = 32  # `openssl rand -hex 32` writes 64
_KEY: Final = "`$.auth.token-secret-file`"


def check_secret(mode: int, text: bytes) -> str | None:
    """Why a file with this mode and content cannot be the token secret (None: it can)."""
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if mode & 0o077:
        return (
            f"is readable or writable by its group or others (mode {stat.S_IMODE(mode):04o}): "
            "run `chmod 600` on it (owner: the coordinator's user)"
        )
    secret = text.strip()
    if len(secret) < MIN_SECRET_CHARS:
        return (
            f"holds {len(secret)} characters; it needs at least {MIN_SECRET_CHARS} random ones "
            "(`openssl rand -hex 32`)"
        )
    return None


def read_token_secret(path: str) -> bytes:
    """The secret in ``path``, checked; InvalidArgument names the config key and the fix."""
    try:
        with open(path, "rb") as f:
            mode, text = os.fstat(f.fileno()).st_mode, f.read(4096)
    except OSError as exc:
        raise InvalidArgument(f"{_KEY}: cannot read {path}: {exc.strerror or exc}") from None
    if (why := check_secret(mode, text)) is not None:
        raise InvalidArgument(f"{_KEY}: {path} {why}")
    return text.strip()


def ensure_token_secret(path: str | Path) -> bytes:
    """Read the secret at ``path``, creating it (0600, random) first if absent: for
    ``tide dev`` and test fixtures, which keep it in their state directory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token_secret(str(p))
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return read_token_secret(str(p))


async def resolve_secret(store: Store, from_file: bytes | None) -> bytes:
    """The key this replica mints and checks tokens with: the file's, else etcd's (legacy)."""
    legacy = await store.get(keys.SECRET)
    if from_file is not None:
        if legacy is not None:
            log.warning(
                "the token secret comes from [auth] token-secret-file; the legacy one at %s in etcd "
                "is ignored (tokens it minted are refused). Once every replica reads the file, "
                "delete it: etcdctl del %s",
                keys.SECRET.decode(),
                keys.SECRET.decode(),
            )
        await _check_agreement(store, from_file)
        return from_file
    log.warning(
        "the token secret is kept in etcd (%s), where anyone who can read etcd can mint tokens: "
        "put one in a file (openssl rand -hex 32 > /etc/tide/token-secret; chmod 600) on every "
        "replica and set [auth] token-secret-file (docs/secrets.md)",
        keys.SECRET.decode(),
    )
    if legacy is None:
        fresh = secrets.token_bytes(32).hex().encode()
        await store.txn(
            [Compare(key=keys.SECRET, target="create", op="==", value=0)], [Put(key=keys.SECRET, value=fresh)]
        )
        legacy = await store.get(keys.SECRET)
        assert legacy is not None
    return bytes.fromhex(legacy.value.decode())


def secret_check(secret: bytes) -> bytes:
    """What replicas compare to learn they hold the same secret, without storing it."""
    return hmac.new(secret, b"tide token secret check", hashlib.sha256).hexdigest().encode()


async def _check_agreement(store: Store, secret: bytes) -> None:
    """Log an error when this replica's secret is not the one the last replica started with:
    tokens one mints, the other refuses (workers fail over to a replica that rejects them).
    The last one to start records its check, so a finished rotation stops the error."""
    mine = secret_check(secret)
    stored = await store.get(keys.SECRET_CHECK)
    if stored is not None and stored.value != mine:
        log.error(
            "this replica's token secret (%s) differs from the one the replica started before it "
            "used: worker and node tokens minted by one are refused by the other. Give every "
            "replica the same file (expected while a rotation restarts them one by one; "
            "docs/secrets.md)",
            _KEY,
        )
    if stored is None or stored.value != mine:
        await store.txn([], [Put(key=keys.SECRET_CHECK, value=mine)])
