"""The fault suite, on real processes: a 3-member etcd cluster, two coordinator replicas on it,
one noded (with its worker gateway) running two unmodified RunPod workers, and a steady stream
of jobs through each fault:

* the etcd leader killed under load (it rejoins a few seconds later);
* the coordinator replica the workers are attached to killed (restarted 4 s later);
* noded killed (restarted 2 s later: its workers and gateway keep running);
* the workers killed (noded restarts them; their in-flight jobs are requeued);
* a network partition of that replica (root and iptables only: packets to it are dropped).

Every fault must lose nothing: every job /run accepted reaches COMPLETED.  Duplicates (a handler
run twice; at least once is the contract), recovery time and the longest completion pause are
reported in the terminal summary and in ``fault-report.txt`` under the module's temp dir, never
asserted.  ``TIDE_FAULTS_NO_GATEWAY=1`` runs noded without its gateway (workers call one replica
directly), the baseline for the replica-kill pause.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.cluster import NodedProcess
from tests.fixtures.coordinator import REPO_ROOT, CoordinatorProcess, http_json, wait_until
from tests.fixtures.etcd import ETCD_MISSING, EtcdCluster, etcd_binary
from tests.fixtures.faults import FAULT_REPORTS, FaultReport, Load, executions

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(150)]

HANDLER = f"dir://{REPO_ROOT / 'tests' / 'e2e' / 'handlers' / 'faults'}"


@dataclass
class Rig:
    etcd: EtcdCluster
    replicas: list[CoordinatorProcess]
    noded: NodedProcess
    ep: str
    key: str
    log: Path
    report_path: Path

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.replicas]

    def attached(self) -> CoordinatorProcess:
        """The replica the workers call: the gateway's first healthy one (else the first)."""
        if self.noded.gateway:
            code, health = http_json("GET", f"http://{self.noded.gateway}/_gateway/healthz")
            if code == 200 and health["healthy"]:
                return next(c for c in self.replicas if c.url == health["healthy"][0])
        return self.replicas[0]


def _replica(store_url: str, admin_key: str | None, secret: Path | None) -> CoordinatorProcess:
    # Replicas share the token secret file, as Ansible installs one on every coordinator: a
    # worker's token minted by one must verify on the other it fails over to.
    c = CoordinatorProcess(store_url=store_url, claim_grace_s=3.0, token_secret_file=secret)
    if admin_key is not None:  # replicas share the operator's admin key (noded joins with it)
        (c.root / "admin.key").write_text(admin_key + "\n")
        c.admin_key = admin_key
    with c.config_path.open("a") as f:
        f.write("\n[nodes]\nlost-after-s = 6.0\n")
    return c


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if etcd_binary() is None:
        pytest.skip(ETCD_MISSING)
    scratch = tmp_path_factory.mktemp("faults")
    etcd = EtcdCluster(size=3)
    first = _replica(etcd.store_url, None, None)
    replicas = [first, _replica(etcd.store_url, first.admin_key, first.token_secret_file)]
    gateway = os.environ.get("TIDE_FAULTS_NO_GATEWAY", "") != "1"
    noded = NodedProcess(
        coordinator_url=[c.url for c in replicas],
        join_key=first.admin_key,
        hostname="fault-a",
        gateway=gateway,
    )
    try:
        etcd.start()
        for c in replicas:
            c.start()
        noded.start(admin=first.admin)
        key = str(first.admin.create_key(f"client-{uuid.uuid4().hex[:6]}")["key"])
        log = scratch / "executions.log"
        ep = f"faults-{uuid.uuid4().hex[:6]}"
        spec = {"workersMin": 2, "workersMax": 2, "env": {"TIDE_FAULT_LOG": str(log)}}
        first.admin.call("POST", "/admin/v1/endpoints", {"name": ep, "image": HANDLER, **spec})
        rig = Rig(etcd, replicas, noded, ep, key, log, scratch / "fault-report.txt")
        _warm(rig)
        yield rig
    finally:
        noded.cleanup()
        for c in replicas:
            c.cleanup()
        etcd.stop()


def _warm(rig: Rig) -> None:
    """Both workers up and serving: a few jobs complete."""
    wait_until(lambda: len(rig.noded.workers()) == 2, timeout=60, what="two workers")
    load = Load(rig.urls, rig.ep, rig.key, rate=10.0, sleep=0.0).start()
    wait_until(lambda: len(load.done) >= 4, timeout=60, what="the first jobs to complete")
    load.stop_submitting()
    load.wait_settled()


def _run_fault(
    rig: Rig, request: pytest.FixtureRequest, name: str, inject: Callable[[], None], heal_after: float
) -> FaultReport:
    """Load for 2 s, inject, load on (heal after ``heal_after`` s, then 4 s more), settle, report."""
    load = Load(rig.urls, rig.ep, rig.key, rate=5.0, sleep=0.2).start()
    time.sleep(2.0)
    fault_at = time.time()
    heal = inject()
    time.sleep(heal_after)
    if heal is not None:
        heal()
    time.sleep(4.0)
    report = load.finish(name, fault_at, executions(rig.log))
    request.config.stash.setdefault(FAULT_REPORTS, []).append(report)
    with rig.report_path.open("a") as f:
        f.write(report.line() + "\n")
    print(report.line())
    return report


def _check(report: FaultReport) -> None:
    assert report.submitted > 0
    assert report.lost == 0, report.line()
    assert report.completed == report.submitted, report.line()


def test_etcd_leader_killed_under_load(rig: Rig, request: pytest.FixtureRequest) -> None:
    def inject() -> Callable[[], None]:
        leader = wait_until(lambda: rig.etcd.leader() is not None, what="an etcd leader")
        leader = rig.etcd.leader()
        assert leader is not None
        rig.etcd.kill(leader)
        return lambda: rig.etcd.start_member(leader)

    _check(_run_fault(rig, request, "etcd leader killed", inject, heal_after=3.0))


def test_coordinator_replica_killed_while_workers_attached(rig: Rig, request: pytest.FixtureRequest) -> None:
    def inject() -> Callable[[], None]:
        victim = rig.attached()
        victim.kill()
        return victim.start

    report = _run_fault(rig, request, "coordinator replica killed", inject, heal_after=4.0)
    print(f"completion pause through the replica's death: {report.pause_s:.2f} s (target <= 1 s)")
    _check(report)


def test_noded_killed(rig: Rig, request: pytest.FixtureRequest) -> None:
    def inject() -> Callable[[], None]:
        rig.noded.kill()
        return lambda: rig.noded.start(admin=rig.replicas[0].admin)

    _check(_run_fault(rig, request, "noded killed", inject, heal_after=2.0))


def test_workers_killed(rig: Rig, request: pytest.FixtureRequest) -> None:
    def inject() -> None:
        assert rig.noded.kill_workers()

    _check(_run_fault(rig, request, "workers killed", inject, heal_after=0.0))


def _partition_skip() -> str | None:
    if os.geteuid() != 0:
        return "a network partition needs root (iptables rules on loopback)"
    if shutil.which("iptables") is None:
        return "a network partition needs iptables (Debian iptables); not installed"
    probe = subprocess.run(["iptables", "-n", "-L", "INPUT"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:  # a container without CAP_NET_ADMIN, or no netfilter in the kernel
        return f"iptables cannot change rules here: {probe.stderr.strip()[:200]}"
    return None


def test_network_partition_of_a_replica(rig: Rig, request: pytest.FixtureRequest) -> None:
    why = _partition_skip()
    if why:
        pytest.skip(why)
    port = str(rig.attached().port)
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", port, "-j", "DROP"]
    healed = threading.Event()

    def heal() -> None:
        if not healed.is_set():
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)
            healed.set()

    def inject() -> Callable[[], None]:
        subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
        return heal

    try:
        _check(_run_fault(rig, request, "replica partitioned", inject, heal_after=6.0))
    finally:
        with contextlib.suppress(Exception):
            heal()
