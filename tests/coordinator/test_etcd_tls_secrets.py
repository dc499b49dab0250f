"""The etcd client key never leaves the process in what the coordinator prints or logs.

``[store] key-file`` is read once into ``EtcdTls.key`` (coordinator/config.py ``to_store``).
What could show it: the struct's repr and str, ``tide config show`` (text and JSON), the
coordinator's ``--check-config`` (success and a TLS mistake), and the store's errors and logs
when etcd cannot be reached.  None may carry the key's PEM, a line of it, or its base64 (what
``msgspec.json.encode`` would make of the bytes); showing the key file's *path* is fine.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from coordinator.main import main as coordinator_main
from coordinator.store import EtcdStore, EtcdTls
from tests.fixtures.etcd import OPENSSL_MISSING, EtcdPki, free_port, make_pki, openssl_binary
from tide.api.errors import Unavailable
from tide.cli.main import main as tide_cli

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(openssl_binary() is None, reason=OPENSSL_MISSING),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> EtcdPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _secrets(key_file: Path) -> list[str]:
    """What must not appear: the key's body lines, the whole PEM, and its base64."""
    pem = key_file.read_bytes()
    body = [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
    return [*body, pem.decode(), base64.b64encode(pem).decode(), "PRIVATE KEY"]


def _assert_clean(text: str, key_file: Path) -> None:
    for secret in _secrets(key_file):
        assert secret not in text, f"key material in output: {secret[:24]}..."


def _config(tmp_path: Path, pki: EtcdPki, *, key: Path, port: int = 2379) -> Path:
    path = tmp_path / "coordinator.toml"
    path.write_text(
        f'[store]\nurl = "etcds://127.0.0.1:{port}"\nca-file = "{pki.ca}"\n'
        f'cert-file = "{pki.client_cert}"\nkey-file = "{key}"\n'
    )
    return path


def _run(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def test_etcd_tls_repr_and_str_hide_the_key(pki: EtcdPki) -> None:
    tls = EtcdTls(ca=pki.ca.read_bytes(), cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes())
    _assert_clean(f"{tls!r} {tls!s} {tls} {[tls]} { ({'tls': tls}) }", pki.client_key)


def test_config_show_and_check_config_print_no_key_material(
    tmp_path: Path, pki: EtcdPki, caplog: pytest.LogCaptureFixture
) -> None:
    path = _config(tmp_path, pki, key=pki.client_key)
    caplog.set_level(logging.DEBUG)
    code, shown = _run(tide_cli, ["config", "show", "--coordinator", str(path)])
    assert code == 0 and str(pki.client_key) in shown  # the path is shown, not what it holds
    code, as_json = _run(tide_cli, ["--json", "config", "show", "--coordinator", str(path)])
    assert code == 0 and json.loads(as_json)["store"]["key-file"] == str(pki.client_key)
    code, checked = _run(coordinator_main, ["--check-config", "--config", str(path)])
    assert code == 0 and "OK" in checked
    # A key that is not the certificate's: the error names the key, not its contents.
    wrong = _config(tmp_path, pki, key=pki.other_client_key)
    code, refused = _run(coordinator_main, ["--check-config", "--config", str(wrong)])
    assert code == 2 and "$.store.cert-file" in refused
    for text in (shown, as_json, checked):
        _assert_clean(text, pki.client_key)
    _assert_clean(refused + caplog.text, pki.other_client_key)
    _assert_clean(caplog.text, pki.client_key)


async def test_unreachable_tls_store_error_and_logs_carry_no_key_material(
    tmp_path: Path, pki: EtcdPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = EtcdTls(ca=pki.ca.read_bytes(), cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes())
    store = EtcdStore(f"https://127.0.0.1:{free_port()}", request_timeout=0.5, tls=tls)  # nobody listens
    try:
        with pytest.raises(Unavailable) as info:
            async with asyncio.timeout(30):
                await store.revision()
    finally:
        await store.close()
    assert "over TLS" in info.value.message
    _assert_clean(f"{info.value} {info.value.message} {store!r} {caplog.text}", pki.client_key)
