"""The token secret (issue 12): a 0600 file on the coordinators, not a key in etcd.

The file's checks (mode, length) are a pure function with a property test; the
daemon refuses a bad file at startup and in ``--check-config``; the file wins over a
legacy secret in etcd; without a file the legacy one is created once and shared.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator._schema import keys
from coordinator._token_secret import (
    MIN_SECRET_CHARS,
    check_secret,
    ensure_token_secret,
    read_token_secret,
    resolve_secret,
)
from coordinator.store import Put, open_store
from tide.api.errors import InvalidArgument

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD = b"0123456789abcdef" * 4


@given(perm=st.integers(0, 0o777), text=st.binary(max_size=80))
def test_check_secret_refuses_shared_modes_and_short_secrets(perm: int, text: bytes) -> None:
    why = check_secret(stat.S_IFREG | perm, text)
    accepted = perm & 0o077 == 0 and len(text.strip()) >= MIN_SECRET_CHARS
    assert (why is None) == accepted
    if perm & 0o077:
        assert why is not None and "chmod 600" in why


def test_check_secret_refuses_a_directory() -> None:
    assert check_secret(stat.S_IFDIR | 0o700, GOOD) == "is not a regular file"


def _secret_file(tmp_path: Path, text: bytes, mode: int) -> Path:
    path = tmp_path / "token-secret"
    path.write_bytes(text)
    path.chmod(mode)
    return path


def test_read_token_secret_strips_and_names_the_key(tmp_path: Path) -> None:
    assert read_token_secret(str(_secret_file(tmp_path, GOOD + b"\n", 0o600))) == GOOD
    with pytest.raises(InvalidArgument, match=r"`\$.auth.token-secret-file`: .*\(mode 0640\)"):
        read_token_secret(str(_secret_file(tmp_path, GOOD, 0o640)))
    with pytest.raises(InvalidArgument, match="holds 5 characters"):
        read_token_secret(str(_secret_file(tmp_path, b"short", 0o600)))
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_token_secret(str(tmp_path / "absent"))


def test_ensure_token_secret_creates_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token-secret"
    first = ensure_token_secret(path)
    assert len(first) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token_secret(path) == first


def _check_config(tmp_path: Path, secret: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(f"[auth]\ntoken-secret-file = '{secret}'\n")
    return subprocess.run(
        [sys.executable, "-m", "coordinator.main", "--check-config", "--config", str(cfg)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_and_startup_refuse_a_readable_secret_file(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path, GOOD, 0o644)
    res = _check_config(tmp_path, secret)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"`$.auth.token-secret-file`: {secret} is readable or writable" in res.stderr
    start = subprocess.run(
        [sys.executable, "-m", "coordinator.main", "--config", str(tmp_path / "coordinator.toml")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert start.returncode == 2 and "chmod 600" in start.stderr and "Traceback" not in start.stderr
    secret.chmod(0o600)
    assert _check_config(tmp_path, secret).returncode == 0


async def test_the_file_wins_over_a_legacy_secret_in_etcd(caplog: pytest.LogCaptureFixture) -> None:
    store = open_store("memory://")
    await store.txn([], [Put(key=keys.SECRET, value=b"aa" * 32)])
    assert await resolve_secret(store, GOOD) == GOOD
    assert "etcdctl del /tide/secret" in caplog.text
    await store.close()


async def test_without_a_file_the_legacy_secret_is_made_once_and_shared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store("memory://")
    first = await resolve_secret(store, None)
    assert len(first) == 32 and await resolve_secret(store, None) == first
    assert "set [auth] token-secret-file" in caplog.text
    await store.close()


async def test_replicas_with_different_secrets_are_told(caplog: pytest.LogCaptureFixture) -> None:
    """A replica whose file differs from the last one's logs an error (their tokens would not
    verify on each other); the same file twice says nothing; the secret itself is not stored."""
    store = open_store("memory://")
    one, other = b"a" * 64, b"b" * 64
    assert await resolve_secret(store, one) == one
    assert await resolve_secret(store, one) == one
    assert "differs" not in caplog.text
    assert await resolve_secret(store, other) == other
    assert "differs" in caplog.text
    stored = await store.get(keys.SECRET_CHECK)
    assert stored is not None and one not in stored.value and other not in stored.value
    await store.close()
