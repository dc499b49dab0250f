"""The systemd side of the operator story (issue 7).

* ``systemd-analyze verify`` must print nothing for our units: it exits 0 even on
  unknown keys, so any output fails (platform notes §5).  ExecStart= must name an
  existing executable, so the units are checked with /opt/tide/venv/bin swapped for
  a temp dir of stubs.
* The daemons speak sd_notify to a NOTIFY_SOCKET the test binds: READY=1 once
  serving, WATCHDOG=1 while WATCHDOG_USEC is set, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops._daemons import REPO_ROOT, Daemon, NotifySocket, free_port, module_cmd

UNITS = ["tide-coordinator.service", "tide-noded.service"]
SYSTEMD_DIR = REPO_ROOT / "systemd"
NO_ANALYZE = "systemd-analyze not installed (Debian package systemd)"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip(NO_ANALYZE)
    return found


def _stubbed_units(tmp_path: Path) -> Path:
    """Copies of the units whose /opt/tide/venv/bin/ points at executable stubs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("tide-coordinator", "tide-noded"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    for unit in UNITS:
        text = (SYSTEMD_DIR / unit).read_text().replace("/opt/tide/venv/bin/", f"{bin_dir}/")
        (tmp_path / unit).write_text(text)
    return tmp_path


def _verify(analyze: str, units: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=60, check=False
    )


def test_units_verify_prints_nothing(tmp_path: Path) -> None:
    analyze = _analyze()
    d = _stubbed_units(tmp_path)
    res = _verify(analyze, [d / u for u in UNITS])
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


def test_units_verify_catches_a_misspelt_key(tmp_path: Path) -> None:
    """The check above is only worth something if verify does complain."""
    analyze = _analyze()
    d = _stubbed_units(tmp_path)
    unit = d / "tide-noded.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    res = _verify(analyze, [unit])
    assert "WatchdogSecs" in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("unit", "threshold"), [("tide-coordinator.service", "20"), ("tide-noded.service", "40")]
)
def test_units_exposure_stays_low(tmp_path: Path, unit: str, threshold: str) -> None:
    """``systemd-analyze security --offline``: the sandbox keeps its exposure (x10: 20 = 2.0) low."""
    analyze = _analyze()
    d = _stubbed_units(tmp_path)
    res = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={threshold}", str(d / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr


def test_units_keep_the_operational_contract() -> None:
    """What the rest of the design relies on, stated once where a reviewer looks."""
    coordinator = (SYSTEMD_DIR / "tide-coordinator.service").read_text().splitlines()
    noded = (SYSTEMD_DIR / "tide-noded.service").read_text().splitlines()
    for lines in (coordinator, noded):
        for directive in ("Type=notify", "Restart=on-failure", "NotifyAccess=main", "ProtectSystem=strict"):
            assert directive in lines
        assert any(line.startswith("WatchdogSec=") for line in lines)
        assert any(line.startswith("ExecStartPre=") and "--check-config" in line for line in lines)
    assert "KillMode=process" in noded  # workers survive a daemon restart
    assert "PrivateDevices=no" in noded  # NVML needs /dev/nvidia*
    assert "PrivateDevices=yes" in coordinator


# -- sd_notify from the real daemons ------------------------------------------------------------


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def _coordinator(tmp_path: Path, notify: NotifySocket, key: str) -> tuple[Daemon, str]:
    port = free_port()
    key_file = tmp_path / "admin.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    cfg = tmp_path / "coordinator.toml"
    cfg.write_text(
        f'version = 1\n[server]\nlisten = "127.0.0.1:{port}"\n[store]\nurl = "memory://"\n'
        f'[auth]\nadmin-key-file = "{key_file}"\n[state]\ndir = "{tmp_path / "cstate"}"\n'
    )
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    cmd = module_cmd("coordinator.main", "--config", str(cfg))
    return Daemon(cmd, log=tmp_path / "coordinator.log", env=env), f"http://127.0.0.1:{port}"


def _noded(tmp_path: Path, notify: NotifySocket, url: str, key: str) -> Daemon:
    key_file = tmp_path / "join.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    cfg = tmp_path / "noded.toml"
    cfg.write_text(
        f'version = 1\n[node]\nhostname = "ops-notify"\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[coordinator]\nurl = "{url}"\njoin-key-file = "{key_file}"\ngateway = ""\n'
        f'[runtime]\nkind = "process"\nstate-dir = "{tmp_path / "nstate"}"\n'
        '[gpus]\nsource = "simulated"\nsimulated = "1xH100-80GB"\n'
        f'[flashboot]\nshm-dir = "{tmp_path / "shm"}"\n'
    )
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    return Daemon(module_cmd("noded.main", "--config", str(cfg)), log=tmp_path / "noded.log", env=env)


@pytest.mark.slow
def test_daemons_send_ready_watchdog_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    key = "tk_ops_notify_admin_key_0123456789"
    noded_sock = NotifySocket(tmp_path / "noded-notify.sock")
    coordinator, url = _coordinator(tmp_path, notify, key)
    noded = _noded(tmp_path, noded_sock, url, key)
    try:
        coordinator.start()
        assert notify.wait_for("READY=1"), coordinator.output()
        assert notify.wait_for("WATCHDOG=1"), coordinator.output()
        noded.start()
        assert noded_sock.wait_for("READY=1"), noded.output()
        assert noded_sock.wait_for("WATCHDOG=1"), noded.output()
        assert noded.terminate() == 0, noded.output()
        assert noded_sock.wait_for("STOPPING=1"), noded.output()
        assert coordinator.terminate() == 0, coordinator.output()
        assert notify.wait_for("STOPPING=1"), coordinator.output()
    finally:
        noded.terminate()
        coordinator.terminate()
        noded_sock.close()
    # READY comes with a human-readable STATUS= line, and before any STOPPING
    assert any(line.startswith("STATUS=") for line in notify.seen + noded_sock.seen)
    for seen in (notify.seen, noded_sock.seen):
        assert seen.index("READY=1") < seen.index("STOPPING=1")
