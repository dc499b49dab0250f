"""The etcd store over TLS: refusals are clear and bounded, and [store]'s TLS keys are checked.

The contract suite itself runs against a TLS etcd through ``store_factory``'s
``etcd-tls`` backend (conftest.py); this file covers what only TLS has: a client
etcd must refuse (no client certificate, a certificate from another CA, a CA that
did not sign etcd's, a name etcd's certificate lacks) gets ``Unavailable`` naming
the reason within its request timeout, and the coordinator's config turns
``etcds://`` plus files into a working store, or into an error naming the key.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.config import load_config, to_store
from coordinator.store import EtcdStore, EtcdTls, open_store
from tests.contract.conftest import client_tls
from tests.fixtures.coordinator import CoordinatorProcess
from tests.fixtures.etcd import EtcdPki, EtcdServer, free_port
from tide.api.errors import InvalidArgument, Unavailable

pytestmark = pytest.mark.integration

WAIT = 15.0  # bounds every wait; nothing asserts on how long a thing took
REPO_ROOT = Path(__file__).resolve().parents[2]


def _pki(server: EtcdServer) -> EtcdPki:
    assert server.pki is not None
    return server.pki


async def _refused(url: str | list[str], tls: EtcdTls | None) -> str:
    with pytest.raises(Unavailable) as info:
        async with asyncio.timeout(WAIT):
            await EtcdStore.connect(url, tls=tls, request_timeout=1.0)
    return info.value.message


# -- refusals ----------------------------------------------------------------------------------


async def test_etcd_tls_without_client_certificate_is_unavailable(etcd_tls_server: EtcdServer) -> None:
    pki = _pki(etcd_tls_server)
    message = await _refused(etcd_tls_server.url, EtcdTls(ca=pki.ca.read_bytes()))
    assert "unreachable over TLS" in message
    assert "none is configured" in message  # says the client certificate is missing


async def test_etcd_tls_client_certificate_from_another_ca_is_unavailable(
    etcd_tls_server: EtcdServer,
) -> None:
    pki = _pki(etcd_tls_server)
    tls = EtcdTls(
        ca=pki.ca.read_bytes(),
        cert=pki.other_client_cert.read_bytes(),
        key=pki.other_client_key.read_bytes(),
    )
    assert "unreachable over TLS" in await _refused(etcd_tls_server.url, tls)


async def test_etcd_tls_wrong_ca_is_unavailable(etcd_tls_server: EtcdServer) -> None:
    pki = _pki(etcd_tls_server)
    tls = EtcdTls(
        ca=pki.other_ca.read_bytes(), cert=pki.client_cert.read_bytes(), key=pki.client_key.read_bytes()
    )
    message = await _refused(etcd_tls_server.url, tls)
    assert "CERTIFICATE_VERIFY_FAILED" in message


async def test_etcd_tls_server_name_is_checked(etcd_tls_server: EtcdServer) -> None:
    tls = client_tls(etcd_tls_server.pki)
    missing = EtcdTls(ca=tls.ca, cert=tls.cert, key=tls.key, server_name="tide-etcd")
    assert "tide-etcd" in await _refused(etcd_tls_server.url, missing)
    # a name the certificate does carry, while connecting by IP
    named = EtcdTls(ca=tls.ca, cert=tls.cert, key=tls.key, server_name="localhost")
    store = await EtcdStore.connect(etcd_tls_server.url, tls=named)
    try:
        assert await store.revision() > 0
    finally:
        await store.close()


async def test_etcd_plaintext_client_of_a_tls_etcd_is_unavailable(etcd_tls_server: EtcdServer) -> None:
    plain = f"http://127.0.0.1:{etcd_tls_server.client_port}"
    assert "unreachable" in await _refused(plain, None)


async def test_etcd_tls_tries_each_endpoint(etcd_tls_server: EtcdServer) -> None:
    """Several endpoints on one host need no server name: it defaults to that host."""
    dead = f"https://127.0.0.1:{free_port()}"
    store = await EtcdStore.connect([dead, etcd_tls_server.url], tls=client_tls(etcd_tls_server.pki))
    try:
        assert await store.revision() > 0
    finally:
        await store.close()


def test_open_store_tls_urls() -> None:
    tls = EtcdTls(server_name="tide-etcd")
    assert isinstance(open_store("etcds://10.0.0.1:2379,10.0.0.2:2379", tls=tls), EtcdStore)
    assert isinstance(open_store("https://127.0.0.1:2379,https://127.0.0.1:2380"), EtcdStore)
    bad = [
        ("etcd://127.0.0.1:2379", tls, "plaintext"),  # TLS settings never downgrade silently
        ("etcds://10.0.0.1:2379,10.0.0.2:2379", None, "server name"),
        ("etcds://127.0.0.1:2379,http://127.0.0.1:2380", None, "mixes"),
        ("memory://", tls, "in-process"),
    ]
    for url, options, says in bad:
        with pytest.raises(InvalidArgument, match=says):
            open_store(url, tls=options)
    with pytest.raises(InvalidArgument, match="needs its key"):
        EtcdTls(cert=b"x")
    assert "KEY" not in repr(EtcdTls(cert=b"PRIVATE KEY", key=b"PRIVATE KEY"))


# -- the coordinator's [store] ------------------------------------------------------------------


def _config(tmp_path: Path, url: str, **keys: str | Path) -> Path:
    lines = [f'url = "{url}"', *(f'{k.replace("_", "-")} = "{v}"' for k, v in keys.items())]
    path = tmp_path / "coordinator.toml"
    path.write_text("[store]\n" + "\n".join(lines) + "\n")
    return path


def _config_error(path: Path) -> str:
    with pytest.raises(InvalidArgument) as info:
        to_store(load_config(str(path)))
    return info.value.message


async def test_config_etcds_store_serves(tmp_path: Path, etcd_tls_server: EtcdServer) -> None:
    pki = _pki(etcd_tls_server)
    url = etcd_tls_server.url.replace("https://", "etcds://")
    path = _config(tmp_path, url, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    store = to_store(load_config(str(path)))
    try:
        async with asyncio.timeout(WAIT):
            assert await store.revision() > 0
    finally:
        await store.close()


def test_config_tls_mistakes_name_the_key(tmp_path: Path, etcd_tls_server: EtcdServer) -> None:
    pki = _pki(etcd_tls_server)
    url = "etcds://127.0.0.1:2379"
    cases: list[tuple[str, dict[str, str | Path], str]] = [
        (url, {"cert_file": pki.client_cert}, "`$.store.key-file` is empty"),
        (url, {"key_file": pki.client_key}, "`$.store.cert-file` is empty"),
        (url, {"ca_file": tmp_path / "absent.crt"}, "`$.store.ca-file`: cannot read"),
        (url, {"ca_file": pki.client_key}, "`$.store.ca-file`: .* holds no PEM certificate"),
        (
            url,
            {"cert_file": pki.client_cert, "key_file": pki.other_client_key},
            "`$.store.cert-file`: the certificate and key-file do not match",
        ),
        ("etcd://127.0.0.1:2379", {"ca_file": pki.ca}, "`$.store.ca-file` is set, but .* plaintext"),
        ("etcds://10.0.0.1:2379,10.0.0.2:2379", {"ca_file": pki.ca}, "`$.store`: .*store.server-name"),
    ]
    for url_, keys, says in cases:
        with pytest.raises(InvalidArgument, match=says.replace("$", r"\$")):
            to_store(load_config(str(_config(tmp_path, url_, **keys))))
    unreadable = tmp_path / "unreadable.key"
    unreadable.write_bytes(pki.client_key.read_bytes())
    unreadable.chmod(0)
    path = _config(tmp_path, url, cert_file=pki.client_cert, key_file=unreadable)
    if not unreadable.exists() or _readable(unreadable):
        return  # root reads anything
    assert "`$.store.key-file`: cannot read" in _config_error(path)


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def test_check_config_reports_a_tls_mistake(tmp_path: Path, etcd_tls_server: EtcdServer) -> None:
    path = _config(tmp_path, "etcds://127.0.0.1:2379", cert_file=_pki(etcd_tls_server).client_cert)
    res = subprocess.run(
        [sys.executable, "-m", "coordinator.main", "--check-config", "--config", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "`$.store.key-file` is empty" in res.stderr
    assert "Traceback" not in res.stderr


def test_coordinator_process_serves_on_a_tls_etcd(etcd_tls_server: EtcdServer) -> None:
    """tide-coordinator from a config file with etcds:// and the files: /readyz answers."""
    pki = _pki(etcd_tls_server)
    url = etcd_tls_server.url.replace("https://", "etcds://")
    proc = CoordinatorProcess(store_url=url)
    text = proc.config_path.read_text()
    tls_keys = f'ca-file = "{pki.ca}"\ncert-file = "{pki.client_cert}"\nkey-file = "{pki.client_key}"\n'
    proc.config_path.write_text(text.replace(f'url = "{url}"\n', f'url = "{url}"\n{tls_keys}'))
    try:
        proc.start()  # returns once /readyz answers 200
    finally:
        proc.stop()
