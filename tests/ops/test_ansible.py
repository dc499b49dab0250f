"""The Ansible playbook (issue 7): lint and syntax-check clean, then applied for real.

The target is this machine, as five hosts with ``ansible_connection: local``, each
in its own directory root (``tide_root``): three etcd members (one of them also the
coordinator) and two GPU hosts (CPU-only: process runtime, simulated GPUs, NVIDIA
checks off).  Every path a role writes, and every path the rendered configs name,
is under that root; users come from sysusers.d into the root's /etc/passwd, units
are enabled with ``systemctl --root``.  What a root cannot hold is skipped: no
systemd runs there, so services are not started by the playbook (the test starts
the daemons itself from the rendered files), and packages are only checked.

Tide is installed from a wheel built here, with ``--no-index``: its dependencies
come from the test's own environment through ``tide_venv_site_dirs`` (the role's
hook for a pre-built dependency tree).  Nothing is fetched.

Then the results are checked (files, modes, users, units, configs accepted by
``--check-config``), a second run must change nothing, a changed input restarts
only the service whose config changed, and the rendered configs run: three etcd
members form a TLS cluster with no plaintext listener, the coordinator reaches all
three over TLS with the client certificate the etcd role issued it and serves
/readyz, and both nodes register with their region and data center.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import kill_recorded_gateway, kill_worker_groups, runtime_workers
from tests.ops._daemons import REPO_ROOT, Daemon
from tests.ops._wheel import build_wheel

ANSIBLE_DIR = REPO_ROOT / "ansible"
ADMIN_KEY = "tk_ops_ansible_admin_key_0123456789abcdef"
ETCD_HOSTS = ["ctl-1", "ctl-2", "ctl-3"]
ECHO = f"dir://{REPO_ROOT / 'examples' / 'echo'}"
GPU_HOSTS = {"gpu-eu": ("EU", "EU-RO-1", "1xH100-80GB"), "gpu-us": ("US", "US-TX-3", "2xA100-80GB")}

# A test's time includes its module fixtures' setup: the fleet's plays, and the cluster's etcd
# auth plays, each several minutes of Ansible on a 2-core machine.
pytestmark = pytest.mark.timeout(900)


def _tool(name: str) -> str:
    """An Ansible executable beside the test's interpreter, else on PATH; skip without it."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install 'ansible-core<2.20' ansible-lint)")
    return found


def _env(tmp: Path) -> dict[str, str]:
    home = tmp / "ansible-home"
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }


def test_playbook_syntax_check(tmp_path: Path) -> None:
    res = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "site.yml"],
        cwd=ANSIBLE_DIR,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    res = subprocess.run(
        [_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "0 failure(s), 0 warning(s)" in res.stdout + res.stderr


# -- the real run -----------------------------------------------------------------------------


def _deps_site(tmp: Path) -> Path:
    """The test interpreter's site-packages minus Tide itself: a dependency tree for the
    target's virtualenv (an editable Tide there would shadow the wheel under test)."""
    site = tmp / "deps-site"
    site.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if entry.name.startswith(("tide-", "tide.", "__editable__", "_tide")) or entry.suffix == ".pth":
            continue
        (site / entry.name).symlink_to(entry)
    return site


def _packages_checkable() -> bool:
    """The apt module needs python3-apt (it re-runs itself under /usr/bin/python3) and,
    offline, the packages already installed."""
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import apt"], capture_output=True, check=False, timeout=30
    )
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "etcd-server", "etcd-client", "containerd", "runc"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return probe.returncode == 0 and dpkg.returncode == 0


def _target_python() -> str:
    """The targets' interpreter for Ansible's modules: the system's, as on a real host
    (and it has python3-apt for the apt module); else the test's own."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


class Fleet:
    """The inventory the test writes, and the ports it chose."""

    def __init__(self, tmp: Path, wheel: Path) -> None:
        self.tmp = tmp
        self.wheel = wheel
        # The daemons start minutes after the playbook chose their addresses, so they get a
        # loopback /24 of their own (standard ports) instead of free ports others could take.
        net = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"
        self.etcd_ips = {h: f"{net}.{i + 1}" for i, h in enumerate(ETCD_HOSTS)}
        self.coordinator = f"{net}.10:8420"
        self.noded_ips = {h: f"{net}.{i + 21}" for i, h in enumerate(GPU_HOSTS)}
        self.inventory = tmp / "inventory.yml"
        self.write()

    def root(self, host: str) -> Path:
        return self.tmp / "hosts" / host

    def write(self, **gpu_eu_overrides: Any) -> None:
        """The inventory; ``gpu_eu_overrides`` are extra host vars for gpu-eu alone."""
        manage = _packages_checkable()
        url = f"http://{self.coordinator}"
        common = {
            "ansible_connection": "local",
            "ansible_python_interpreter": _target_python(),
            "tide_package": str(self.wheel),
            "tide_pip_args": "--no-index",
            "tide_venv_site_dirs": [str(self.tmp / "deps-site")],
            "tide_python": sys.executable,
            "tide_manage_services": False,
            "tide_coordinator_url": url,
            "coordinator_admin_key": ADMIN_KEY,
            "noded_join_key": ADMIN_KEY,
            "etcd_pki_dir": str(self.tmp / "pki"),
            "etcd_manage_packages": manage,
            "noded_manage_packages": manage,
        }
        etcd_hosts = {
            h: {"tide_root": str(self.root(h)), "etcd_address": ip} for h, ip in self.etcd_ips.items()
        }
        gpu_hosts = {
            h: {
                "tide_root": str(self.root(h)),
                "noded_region": region,
                "noded_datacenter": dc,
                "noded_runtime": "process",
                "noded_gpu_source": "simulated",
                "noded_simulated_gpus": gpus,
                "noded_require_nvidia": False,
                "noded_address": self.noded_ips[h],
                "noded_listen": f"{self.noded_ips[h]}:8421",
                # Both hosts share this machine's loopback: each gateway on its host's own address.
                "noded_gateway": f"{self.noded_ips[h]}:8422",
                "noded_mig_pool": [0],
                "noded_flashboot_shm_dir": str(self.root(h) / "dev/shm/tide-flashboot"),
                **(gpu_eu_overrides if h == "gpu-eu" else {}),
            }
            for h, (region, dc, gpus) in GPU_HOSTS.items()
        }
        ctl = {"coordinator_address": self.coordinator.split(":")[0], "coordinator_listen": self.coordinator}
        inventory = {
            "all": {
                "vars": common,
                "children": {
                    "etcd": {"hosts": etcd_hosts},
                    "coordinators": {"hosts": {"ctl-1": ctl}},
                    "gpu_nodes": {"hosts": gpu_hosts},
                },
            }
        }
        self.inventory.write_text(json.dumps(inventory, indent=1))  # JSON is YAML

    def play(self, *extra: str) -> Run:
        """One ansible-playbook run (the default output, parsed); fails the test on failure."""
        res = subprocess.run(
            [_tool("ansible-playbook"), "-i", str(self.inventory), "site.yml", *extra],
            cwd=ANSIBLE_DIR,
            env=_env(self.tmp),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
        return Run(res.stdout)


_RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=\d+")
_HEADER = re.compile(r"^(PLAY|TASK|RUNNING HANDLER) \[(?P<name>[^\]]*)\]")
_RESULT = re.compile(r"^(ok|changed|skipping|fatal|failed): \[(?P<host>[^\]]+)\]")


class Run:
    """What one run did, from the default callback's output: changes per host (the
    recap) and, per handler, the hosts it ran on (skipped there: no systemd)."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.changed: dict[str, int] = {}
        self.handlers: dict[str, set[str]] = {}
        current = ""
        for line in stdout.splitlines():
            if m := _RECAP.match(line):
                self.changed[m["host"]] = int(m["changed"])
            elif m := _HEADER.match(line):
                current = m["name"].split(" : ")[-1] if line.startswith("RUNNING HANDLER") else ""
            elif (m := _RESULT.match(line)) and current:
                self.handlers.setdefault(current, set()).add(m["host"])

    def notified(self, handler: str) -> set[str]:
        return self.handlers.get(handler, set())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Run, Run]]:
    """The playbook applied twice to a fresh fleet: (fleet, first run, second run)."""
    _tool("ansible-playbook")
    tmp = tmp_path_factory.mktemp("fleet")
    _deps_site(tmp)
    fleet = Fleet(tmp, build_wheel(REPO_ROOT, tmp / "dist"))
    first = fleet.play()
    second = fleet.play()
    yield fleet, first, second


@pytest.mark.slow
def test_playbook_second_run_changes_nothing(fleet: tuple[Fleet, Run, Run]) -> None:
    _, first, second = fleet
    assert set(first.changed) == {*ETCD_HOSTS, *GPU_HOSTS}
    assert all(n > 0 for n in first.changed.values())
    assert second.changed == dict.fromkeys([*ETCD_HOSTS, *GPU_HOSTS], 0), second.stdout[-3000:]
    # the first run notified each service's restart; the second notified none
    assert first.notified("Restart tide-noded") == set(GPU_HOSTS)
    assert first.notified("Restart tide-coordinator") == {"ctl-1"}
    assert first.notified("Restart etcd") == set(ETCD_HOSTS)
    for handler in ("Restart tide-noded", "Restart tide-coordinator", "Restart etcd"):
        assert second.notified(handler) == set()


@pytest.mark.slow
def test_playbook_results_on_the_hosts(fleet: tuple[Fleet, Run, Run]) -> None:
    f, _, _ = fleet
    for host in ["ctl-1", *GPU_HOSTS]:
        root = f.root(host)
        passwd = (root / "etc/passwd").read_text()
        assert "tide:x:" in passwd and "/usr/sbin/nologin" in passwd
        gid = int(
            next(
                line for line in (root / "etc/group").read_text().splitlines() if line.startswith("tide:")
            ).split(":")[2]
        )
        etc_tide = (root / "etc/tide").stat()
        assert (oct(etc_tide.st_mode & 0o777), etc_tide.st_gid) == ("0o750", gid)
        assert (root / "opt/tide/venv/bin/tide-coordinator").exists()
        assert (root / "opt/tide/docs/config.md").read_text() == (REPO_ROOT / "docs/config.md").read_text()
    for host, unit in [
        ("ctl-1", "tide-coordinator.service"),
        *((h, "tide-noded.service") for h in GPU_HOSTS),
    ]:
        installed = f.root(host) / "etc/systemd/system" / unit
        assert installed.read_text() == (REPO_ROOT / "systemd" / unit).read_text()
        assert (f.root(host) / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    key = f.root("gpu-eu") / "etc/tide/node-join.key"
    assert (oct(key.stat().st_mode & 0o777), key.read_text().strip()) == ("0o600", ADMIN_KEY)
    coordinator_toml = (f.root("ctl-1") / "etc/tide/coordinator.toml").read_text()
    assert ADMIN_KEY not in coordinator_toml  # only its hash reaches the host
    for host in ETCD_HOSTS:
        pki = f.root(host) / "etc/etcd/pki"
        assert oct((pki / "member.key").stat().st_mode & 0o777) == "0o600"
        env = _env_file(f.root(host) / "etc/default/etcd")
        assert "ETCD_INITIAL_CLUSTER" in env
        # TLS only: no plaintext client listener unless etcd_plaintext_localhost
        assert env["ETCD_LISTEN_CLIENT_URLS"] == f"https://{f.etcd_ips[host]}:2379"


@pytest.mark.slow
def test_coordinator_config_reaches_every_etcd_member_over_tls(fleet: tuple[Fleet, Run, Run]) -> None:
    f, _, _ = fleet
    root = f.root("ctl-1")
    store = tomllib.loads((root / "etc/tide/coordinator.toml").read_text())["store"]
    tls_dir = root / "etc/tide/etcd"
    assert store == {
        "url": "etcds://" + ",".join(f"{ip}:2379" for ip in f.etcd_ips.values()),
        "ca-file": str(tls_dir / "ca.crt"),
        "cert-file": str(tls_dir / "client.crt"),
        "key-file": str(tls_dir / "client.key"),
        "server-name": "tide-etcd",  # in every member's certificate
    }
    pki = f.tmp / "pki"
    assert (tls_dir / "ca.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    assert (tls_dir / "client.key").read_bytes() == (pki / "coordinator.key").read_bytes()
    gid = (root / "etc/tide").stat().st_gid
    for name, mode in [("ca.crt", "0o644"), ("client.crt", "0o644"), ("client.key", "0o640")]:
        st = (tls_dir / name).stat()
        assert (oct(st.st_mode & 0o777), st.st_uid, st.st_gid) == (mode, 0, gid), name


@pytest.mark.slow
def test_token_secret_is_one_0600_file_owned_by_tide(fleet: tuple[Fleet, Run, Run]) -> None:
    """Made once on the controller, installed for the coordinator's user alone, named by
    the config; the second run (see above) left it as it was."""
    f, _, _ = fleet
    root = f.root("ctl-1")
    installed = root / "etc/tide/token-secret"
    made = f.tmp / "secrets/token-secret"
    assert installed.read_text().strip() == made.read_text().strip()
    assert len(made.read_text().strip()) == 64
    tide_uid = next(
        int(line.split(":")[2])
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("tide:")
    )
    st = installed.stat()
    assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o600", tide_uid)
    assert oct(made.stat().st_mode & 0o777) == "0o600"
    auth = tomllib.loads((root / "etc/tide/coordinator.toml").read_text())["auth"]
    assert auth["token-secret-file"] == str(installed)


def _t1_mount_unit(f: Fleet, host: str) -> str:
    """The name systemd gives the mount unit of the host's FlashBoot T1 directory."""
    where = str(f.root(host) / "dev/shm/tide-flashboot")
    res = subprocess.run(
        ["systemd-escape", "--path", "--suffix=mount", where], capture_output=True, text=True, check=True
    )
    return res.stdout.strip()


@pytest.mark.slow
def test_flashboot_t1_is_a_huge_page_tmpfs_that_noded_requires(fleet: tuple[Fleet, Run, Run]) -> None:
    f, _, _ = fleet
    for host in GPU_HOSTS:
        etc = f.root(host) / "etc/systemd/system"
        where = str(f.root(host) / "dev/shm/tide-flashboot")
        unit = etc / _t1_mount_unit(f, host)
        text = unit.read_text()
        assert f"Where={where}\n" in text and "Type=tmpfs" in text
        options = next(line for line in text.splitlines() if line.startswith("Options="))
        assert "huge=within_size" in options
        assert "size=67139m" in options  # the 64 GB (10^9) default budget + 10%, in MiB
        assert (etc / "local-fs.target.wants" / unit.name).is_symlink()
        drop_in = (etc / "tide-noded.service.d/20-flashboot-t1.conf").read_text()
        assert f"RequiresMountsFor={where}\n" in drop_in


def _check_config(f: Fleet, host: str, daemon: str) -> subprocess.CompletedProcess[str]:
    binary = f.root(host) / f"opt/tide/venv/bin/tide-{daemon}"
    config = f.root(host) / f"etc/tide/{daemon}.toml"
    return subprocess.run(
        [str(binary), "--check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_rendered_configs_pass_check_config(fleet: tuple[Fleet, Run, Run]) -> None:
    f, _, _ = fleet
    for host, daemon in [("ctl-1", "coordinator"), *((h, "noded") for h in GPU_HOSTS)]:
        res = _check_config(f, host, daemon)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().endswith(": OK")


@pytest.mark.slow
def test_installed_units_verify_clean(fleet: tuple[Fleet, Run, Run]) -> None:
    """The units as installed, with the target root's own executables for ExecStart=."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    f, _, _ = fleet
    out = f.tmp / "verify"
    out.mkdir(exist_ok=True)
    units = []
    t1_unit = _t1_mount_unit(f, "gpu-eu")
    for host, unit in [
        ("ctl-1", "tide-coordinator.service"),
        ("gpu-eu", "tide-noded.service"),
        ("gpu-eu", t1_unit),
    ]:
        text = (f.root(host) / "etc/systemd/system" / unit).read_text()
        (out / unit).write_text(text.replace("/opt/tide/", f"{f.root(host)}/opt/tide/"))
        units.append(str(out / unit))
    res = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60, check=False)
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


# -- the rendered configs, running -------------------------------------------------------------


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value.strip('"')
    return out


def _wait(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _etcdctl(f: Fleet, *args: str, cert: str | None = "client") -> subprocess.CompletedProcess[str]:
    """etcdctl to every member with the CA's certificate ``cert`` from the controller's PKI
    (default: the operators' ``client``; None: no client certificate)."""
    endpoints = ",".join(f"https://{ip}:2379" for ip in f.etcd_ips.values())
    pki = f.tmp / "pki"
    identity = [f"--cert={pki / f'{cert}.crt'}", f"--key={pki / f'{cert}.key'}"] if cert else []
    return subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", f"--cacert={pki / 'ca.crt'}", *identity, *args],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _tide(f: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``tide`` CLI as installed on the coordinator host."""
    return subprocess.run(
        [str(f.root("ctl-1") / "opt/tide/venv/bin/tide"), *args],
        env={
            **os.environ,
            "TIDE_URL": f"http://{f.coordinator}",
            "TIDE_API_KEY": ADMIN_KEY,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _registered(f: Fleet) -> list[dict[str, Any]] | None:
    res = _tide(f, "nodes", "--json")
    if res.returncode != 0:
        return None
    nodes: list[dict[str, Any]] = json.loads(res.stdout)
    return nodes if len(nodes) == len(GPU_HOSTS) else None


def _readyz(address: str) -> dict[str, Any] | None:
    """The coordinator's /readyz once it answers 200 (its store view loaded from etcd)."""
    try:
        with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (urllib.error.URLError, OSError):
        return None


class Cluster:
    """The fleet's daemons, started from the rendered files as systemd would start them."""

    def __init__(self, fleet: Fleet) -> None:
        self.f = fleet
        self.daemons: list[Daemon] = []
        self.noded: dict[str, Daemon] = {}
        self.auth_runs: list[Run] = []

    def start(self, cmd: list[str], log: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(cmd, log=self.f.tmp / log)
        if env is not None:
            d.env = env
        self.daemons.append(d)
        d.start()
        return d

    def start_etcd(self, etcd: str) -> None:
        for host in ETCD_HOSTS:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
            env.update(_env_file(self.f.root(host) / "etc/default/etcd"))
            self.start([etcd], f"{host}-etcd.log", env)

    def start_coordinator(self) -> None:
        ctl = self.f.root("ctl-1")
        cmd = [
            str(ctl / "opt/tide/venv/bin/tide-coordinator"),
            "--config",
            str(ctl / "etc/tide/coordinator.toml"),
        ]
        self.start(cmd, "coordinator.log")

    def start_noded(self, host: str) -> Daemon:
        root = self.f.root(host)
        cmd = [str(root / "opt/tide/venv/bin/tide-noded"), "--config", str(root / "etc/tide/noded.toml")]
        self.noded[host] = self.start(cmd, f"{host}-noded.log")
        return self.noded[host]

    def stop(self) -> None:
        for d in reversed(self.daemons):
            d.terminate(timeout=15)
        for host in GPU_HOSTS:  # workers and the gateway outlive noded on purpose; ours go here
            kill_worker_groups(self.f.root(host) / "var/lib/tide/noded")
            kill_recorded_gateway(self.f.root(host) / "var/lib/tide/noded", f"{self.f.noded_ips[host]}:8422")


@pytest.fixture(scope="module")
def cluster(fleet: tuple[Fleet, Run, Run]) -> Iterator[Cluster]:
    """Three etcd members from /etc/default/etcd (a TLS cluster), the coordinator and both
    nodes from their rendered configs and installed binaries, nodes registered."""
    etcd = shutil.which("etcd")
    if etcd is None or shutil.which("etcdctl") is None:
        pytest.skip("etcd not installed (Debian package etcd-server)")
    c = Cluster(fleet[0])
    try:
        c.start_etcd(etcd)
        _wait("the etcd cluster", lambda: _etcdctl(c.f, "endpoint", "health").returncode == 0)
        # etcd's users, roles and `auth enable` need the running cluster: applied now, twice
        c.auth_runs = [c.f.play("--limit", "etcd", "-e", "etcd_configure_auth=true") for _ in range(2)]
        c.start_coordinator()
        _wait("the coordinator to be ready", lambda: _readyz(c.f.coordinator))
        for host in GPU_HOSTS:
            c.start_noded(host)
        _wait("both nodes to register", lambda: _registered(c.f))
        yield c
    finally:
        c.stop()


@pytest.mark.slow
def test_rendered_configs_run_a_tls_etcd_cluster_coordinator_and_nodes(cluster: Cluster) -> None:
    f = cluster.f
    # the coordinator's store reached etcd, which serves TLS only (no plaintext listener)
    ready = _readyz(f.coordinator)
    assert ready is not None and ready["ready"] and ready["revision"] > 0
    members = _etcdctl(f, "member", "list").stdout
    assert sorted(line.split(", ")[2] for line in members.splitlines()) == ETCD_HOSTS
    nodes = _registered(f)
    assert nodes is not None
    seen = {
        n["id"]: (n["inventory"]["region"], n["inventory"]["datacenter"], len(n["inventory"]["gpus"]))
        for n in nodes
    }
    assert seen == {h: (r, dc, int(g[0])) for h, (r, dc, g) in GPU_HOSTS.items()}
    # the coordinator keeps its state in etcd, reached here over TLS with the operators' cert
    keys = _etcdctl(f, "get", "--prefix", "--keys-only", "/tide/nodes/").stdout.split()
    assert sorted(keys) == [f"/tide/nodes/{h}" for h in sorted(GPU_HOSTS)]
    wide = _tide(f, "nodes", "--wide")
    assert wide.returncode == 0, wide.stderr
    assert "MIG SLICES" in wide.stdout and "FLASHBOOT" in wide.stdout
    status = _tide(f, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert {c["region"] for c in json.loads(status.stdout)["capacity"]} == {"EU", "US"}


@pytest.mark.slow
def test_etcd_auth_admits_each_certificate_to_its_role_only(cluster: Cluster) -> None:
    """After the etcd role's auth tasks: no certificate, or one whose name is no etcd user
    (a member's), is refused; the coordinators' certificate reaches /tide/ and nothing
    else; the operators' is root.  The coordinator (started after them) serves, and no
    token secret sits in etcd."""
    f = cluster.f
    first, second = cluster.auth_runs
    assert first.changed["ctl-1"] > 0
    assert second.changed == dict.fromkeys(ETCD_HOSTS, 0), second.stdout[-3000:]
    users = _etcdctl(f, "user", "list")
    assert users.returncode == 0, users.stderr
    assert sorted(users.stdout.split()) == ["root", "tide-coordinator", "tide-etcd-client"]
    assert "(prefix /tide/)" in _etcdctl(f, "role", "get", "tide").stdout
    # without a client certificate: no TLS session at all
    assert _etcdctl(f, "get", "--prefix", "/tide/", cert=None).returncode != 0
    # a certificate from the CA whose name is no etcd user: refused by etcd's auth
    member = _etcdctl(f, "get", "--prefix", "--keys-only", "/tide/", cert="ctl-2")
    assert member.returncode != 0 and "permission denied" in member.stderr, member
    assert _etcdctl(f, "endpoint", "health", cert="ctl-2").returncode == 0  # the role's health wait
    # the coordinators' certificate: the /tide/ prefix, nothing else
    mine = _etcdctl(f, "get", "--prefix", "--keys-only", "/tide/nodes/", cert="coordinator")
    assert mine.returncode == 0 and mine.stdout.split() == [f"/tide/nodes/{h}" for h in sorted(GPU_HOSTS)]
    for args in (["put", "/elsewhere", "x"], ["get", "/elsewhere"], ["user", "list"], ["auth", "disable"]):
        refused = _etcdctl(f, *args, cert="coordinator")
        assert refused.returncode != 0 and "permission denied" in refused.stderr, (args, refused.stderr)
    assert _readyz(f.coordinator) is not None
    assert _etcdctl(f, "get", "/tide/secret").stdout == ""  # the token secret is a file


def _admin(f: Fleet, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://{f.coordinator}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def _ready_worker(f: Fleet, ep: str) -> dict[str, Any] | None:
    workers = [
        w for w in _admin(f, "GET", f"/admin/v1/workers?endpoint={ep}") if w["state"] in ("idle", "running")
    ]
    return workers[0] if len(workers) == 1 else None


@pytest.mark.slow
def test_upgrade_restarts_only_the_changed_host_and_keeps_its_workers(cluster: Cluster) -> None:
    """gpu-eu gets a rebuilt package (same version) and a changed config; gpu-us nothing.  The
    run restarts noded on gpu-eu only, and that restart (KillMode=process: SIGTERM to noded
    alone, then the new binary) adopts the worker it left running."""
    f = cluster.f
    drained = _tide(f, "node", "drain", "gpu-us")  # so the worker lands on gpu-eu
    assert drained.returncode == 0, drained.stderr
    _admin(
        f, "POST", "/admin/v1/endpoints", {"name": "echo", "image": ECHO, "workersMin": 1, "workersMax": 1}
    )
    worker = _wait("a ready worker", lambda: _ready_worker(f, "echo"))
    assert worker["nodeId"] == "gpu-eu"
    state_dir = f.root("gpu-eu") / "var/lib/tide/noded"
    [before] = [w for w in runtime_workers(state_dir) if w.alive()]

    rebuilt = build_wheel(REPO_ROOT, f.tmp / "dist-upgrade", marker="upgrade")
    f.write(tide_package=str(rebuilt), noded_flashboot_ram_budget_gb=32)
    upgrade = f.play("--limit", "gpu_nodes")
    assert upgrade.notified("Restart tide-noded") == {"gpu-eu"}
    assert upgrade.changed["gpu-us"] == 0
    assert upgrade.changed["gpu-eu"] >= 3  # package copied, reinstalled, config rendered
    assert "ram-budget-gb = 32.0" in (f.root("gpu-eu") / "etc/tide/noded.toml").read_text()

    assert cluster.noded["gpu-eu"].terminate() == 0  # what systemd does with KillMode=process
    assert before.alive()
    restarted = cluster.start_noded("gpu-eu")
    _wait("the adoption", lambda: "adopt 1" in restarted.output())
    [after] = [w for w in runtime_workers(state_dir) if w.alive()]
    assert (after.id, after.pid, after.pid_start) == (before.id, before.pid, before.pid_start)
    again = _ready_worker(f, "echo")
    assert again is not None and again["workerId"] == worker["workerId"]
    assert _tide(f, "node", "undrain", "gpu-us").returncode == 0
