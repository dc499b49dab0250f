"""Suspended workers end to end through ``tide dev`` (issue 16), process runtime, the command most
READMEs write (``python handler.py``): an endpoint scaled to zero keeps its worker suspended (frozen
in place, holding host RAM); the next request thaws that same process (same pid, correct result,
every job run exactly once) and its cold start says ``path: resume``; a worker killed while
suspended is replaced by a fresh start.

Tests never assert on timing: they wait (bounded) for states.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import DevClusterProcess, runtime_workers
from tests.fixtures.coordinator import http_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HANDLER = """\
import os

import runpod

LOG = os.environ["RESUME_TEST_LOG"]


def handler(job):
    with open(LOG, "a") as f:  # one line per run: a job run twice shows twice
        f.write(f"{job['id']} {os.getpid()}\\n")
    return {"pid": os.getpid(), "echo": job["input"]}


runpod.serverless.start({"handler": handler})
"""


@pytest.fixture(scope="module")
def dev() -> Iterator[DevClusterProcess]:
    proc = DevClusterProcess(nodes=1, gpus="1xH100-80GB", suspend_budget_mb=1024)
    proc.start()
    try:
        yield proc
    finally:
        proc.cleanup()


class Endpoint:
    def __init__(self, dev: DevClusterProcess, tmp: Path) -> None:
        self.dev = dev
        self.key = str(dev.admin.create_key(f"client-{uuid.uuid4().hex[:6]}")["key"])
        (tmp / "app").mkdir()
        (tmp / "app" / "handler.py").write_text(HANDLER)
        self.log = tmp / "runs.log"
        self.name = f"ep-{uuid.uuid4().hex[:8]}"
        spec = {"name": self.name, "image": f"dir://{tmp / 'app'}", "command": ["python", "handler.py"]}
        spec |= {
            "workersMin": 0,
            "workersMax": 1,
            "idleTimeout": 1,
            "env": {"RESUME_TEST_LOG": str(self.log)},
        }
        dev.admin.call("POST", "/admin/v1/endpoints", spec)

    def runsync(self, value: int) -> dict[str, Any]:
        url = f"{self.dev.url}/v2/{self.name}/runsync?wait=60000"
        code, body = http_json("POST", url, {"input": {"n": value}}, key=self.key)
        assert code == 200 and body["status"] == "COMPLETED", body
        assert body["output"]["echo"] == {"n": value}
        return dict(body)

    def cold_start(self, job_id: str, *, complete: bool = False) -> dict[str, Any]:
        """The job's coldStart; ``complete``: with the worker's resume record (a fresh start of a
        handler that loads nothing through FlashBoot never has a boot report)."""

        def check() -> dict[str, Any] | None:
            url = f"{self.dev.url}/v2/{self.name}/status/{job_id}"
            code, body = http_json("GET", url, key=self.key)
            cold = body.get("coldStart") if code == 200 else None
            return cold if cold and (cold["complete"] or not complete) else None

        return dict(wait_until(check, timeout=30, what=f"the complete cold start of {job_id}"))

    def workers(self) -> list[dict[str, Any]]:
        return list(self.dev.admin.call("GET", f"/admin/v1/workers?endpoint={self.name}"))

    def wait_suspended(self) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            found = self.workers()
            ok = len(found) == 1 and found[0]["state"] == "suspended" and found[0]["ramBytes"] > 0
            return found[0] if ok else None

        return dict(wait_until(check, timeout=40, what=f"{self.name}'s worker suspended"))

    def runs(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def pid_alive(self, worker: str) -> int:
        found = [w for w in runtime_workers(self.dev.state_dir) if w.id == worker]
        assert found and found[0].alive(), f"{worker} has no live process"
        return found[0].pid


def test_scaled_to_zero_worker_is_suspended_and_resumed_in_place(
    dev: DevClusterProcess, tmp_path: Path
) -> None:
    ep = Endpoint(dev, tmp_path)
    first = ep.runsync(1)
    worker, pid = first["workerId"], first["output"]["pid"]
    assert ep.cold_start(first["id"])["path"] == "fresh"

    suspended = ep.wait_suspended()  # idleTimeout 1: scaled to zero, the worker frozen, not stopped
    assert suspended["workerId"] == worker and ep.pid_alive(worker) == pid

    second = ep.runsync(2)  # thawed: the same process answers
    assert (second["workerId"], second["output"]["pid"]) == (worker, pid)
    cold = ep.cold_start(second["id"], complete=True)
    assert cold["path"] == "resume", cold
    assert [s["stage"] for s in cold["stages"]] == [
        "placement",
        "thaw",
        "device_restore",
        "handler_ready",
        "first_job",
    ]
    # every job ran once, in that one process
    assert sorted(ep.runs()) == sorted([first["id"], str(pid), second["id"], str(pid)])

    # suspended again, then killed while frozen: the next request gets a fresh worker
    ep.wait_suspended()
    os.kill(pid, signal.SIGKILL)
    third = ep.runsync(3)
    assert third["output"]["pid"] != pid
    assert ep.cold_start(third["id"])["path"] == "fresh"
    assert ep.runs().count(third["id"]) == 1 and len(ep.runs()) == 6
