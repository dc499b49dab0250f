"""The `tide` CLI against a real in-process coordinator (MemoryStore), and against
a stub HTTP server for the node routes the coordinator may not have yet.

The CLI runs in-process through ``main(argv)``; its output is read with capsys.
The coordinator runs on its own event loop in a thread, because the CLI's client
is synchronous (urllib) and must not block the loop serving it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import sys
import threading
import time
import types
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coordinator.server import Coordinator, CoordinatorSettings
from coordinator.store import MemoryStore
from tide.cli._cluster import parse_since
from tide.cli._format import ago, duration, table
from tide.cli._gpus import render_bar
from tide.cli.main import main

ADMIN_KEY = "tk_test-admin-key"

Run = Callable[..., tuple[int, str, str]]


class _InProcessCoordinator:
    """A coordinator on MemoryStore, served from a private event loop thread."""

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="coordinator", daemon=True)
        self._coord: Coordinator | None = None
        self._store: MemoryStore | None = None

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> str:
        self._store = MemoryStore()
        settings = CoordinatorSettings(
            port=0,
            state_dir=str(self._state_dir),
            admin_key_hashes=[hashlib.sha256(ADMIN_KEY.encode()).hexdigest()],
        )
        self._coord = Coordinator(self._store, settings)
        await self._coord.start()
        return self._coord.url

    async def _stop(self) -> None:
        assert self._coord is not None and self._store is not None
        await self._coord.stop(5.0)
        await self._store.close()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def start(self) -> str:
        self._thread.start()
        url: str = self._call(self._start())
        return url

    def stop(self) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture(scope="module")
def coordinator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = _InProcessCoordinator(tmp_path_factory.mktemp("coordinator"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No operator's real key file or TIDE_* settings leak into a test."""
    monkeypatch.delenv("TIDE_URL", raising=False)
    monkeypatch.delenv("TIDE_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def run_at(capsys: pytest.CaptureFixture[str]) -> Callable[[str, str], Run]:
    """``run_at(url, key)(*argv)`` -> (exit code, stdout, stderr)."""

    def bind(url: str, key: str = ADMIN_KEY) -> Run:
        def run(*argv: str) -> tuple[int, str, str]:
            capsys.readouterr()
            auth = ["--api-key", key] if key else []
            code = main(["--url", url, *auth, *argv])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        return run

    return bind


@pytest.fixture
def tide(run_at: Callable[[str, str], Run], coordinator_url: str) -> Run:
    return run_at(coordinator_url, ADMIN_KEY)


def _create(tide: Run, name: str, *flags: str) -> dict[str, Any]:
    code, out, err = tide("endpoint", "create", name, "--image", "dir:///srv/echo", *flags, "--json")
    assert code == 0, err
    created: dict[str, Any] = json.loads(out)
    _wait_visible(tide, name)
    return created


def _wait_visible(tide: Run, name: str) -> None:
    """Reads go through the coordinator's watch-fed view; wait (bounded) until it has the endpoint."""
    for _ in range(200):
        if tide("endpoint", "get", name, "--json")[0] == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"endpoint {name} never became visible")


def _post(url: str, body: object) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {ADMIN_KEY}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


# -- help and usage ----------------------------------------------------------


def test_help_lists_every_command_with_examples(run_at: Callable[[str, str], Run]) -> None:
    run = run_at("http://127.0.0.1:9", "")
    code, out, _ = run("--help")
    assert code == 0
    for command in (
        "endpoint",
        "keys",
        "jobs",
        "worker-token",
        "nodes",
        "node",
        "workers",
        "logs",
        "usage",
        "status",
        "gpus",
        "batch",
        "dev",
    ):
        assert f"\n    {command} " in out
    assert "examples:" in out
    code, out, _ = run("endpoint", "create", "--help")
    assert code == 0 and "example" in out and "--gpu-count" in out and "--from-file" in out


def test_usage_errors_exit_2(run_at: Callable[[str, str], Run]) -> None:
    run = run_at("http://127.0.0.1:9", "")
    assert run("endpoint")[0] == 2
    assert run("endpoint", "create", "x", "--image", "i", "--scaler", "FASTEST")[0] == 2
    code, _, err = run("endpoint", "create", "x")
    assert code == 2 and "--image" in err
    code, _, err = run("endpoint", "create", "x", "--image", "i", "--env", "NOEQUALS")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = run("usage", "--since", "yesterday-ish")
    assert code == 2 and "--since" in err


# -- endpoints ---------------------------------------------------------------


def test_endpoint_create_get_list_update_delete(tide: Run) -> None:
    flags = [
        "--gpu",
        "H100-80GB:3g.40gb",
        "--gpu",
        "A100-80GB,L40S",
        "--max",
        "2",
        "--idle-timeout",
        "30",
        "--scaler",
        "request_count",
        "--scaler-value",
        "3",
        "--no-flashboot",
        "--env",
        "MODEL=tiny",
        "--env",
        "X=a=b",
        "--command",
        "python -u handler.py",
        "--args",
        '["--port", "8000"]',
        "--data-center",
        "EU-RO-1",
        "--execution-timeout-ms",
        "60000",
    ]
    code, out, err = tide("endpoint", "create", "lifecycle", "--image", "dir:///srv/echo", *flags)
    assert code == 0, err
    assert "created endpoint lifecycle" in out and "/v2/lifecycle/run" in err
    _wait_visible(tide, "lifecycle")

    code, out, _ = tide("endpoint", "get", "lifecycle", "--json")
    got = json.loads(out)
    assert got["gpuTypeIds"] == ["H100-80GB:3g.40gb", "A100-80GB", "L40S"]  # order kept
    assert got["env"] == {"MODEL": "tiny", "X": "a=b"}
    assert got["command"] == ["python", "-u", "handler.py"] and got["args"] == ["--port", "8000"]
    assert (got["workersMax"], got["idleTimeout"], got["scalerType"], got["scalerValue"]) == (
        2,
        30,
        "REQUEST_COUNT",
        3,
    )
    assert got["flashboot"] is False and got["dataCenterIds"] == ["EU-RO-1"]
    assert got["executionTimeoutMs"] == 60000 and "health" in got

    code, out, _ = tide("endpoint", "get", "lifecycle")
    assert code == 0
    assert "H100-80GB:3g.40gb,A100-80GB,L40S" in out and "in order of preference" in out
    assert "health" in out and "0 queued" in out and "MODEL, X" in out and "tiny" not in out

    code, out, _ = tide("endpoint", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["NAME", "IMAGE", "GPUS"]
    assert any(line.startswith("lifecycle ") for line in out.splitlines())
    code, out, _ = tide("endpoint", "list", "--json")
    assert "lifecycle" in [e["id"] for e in json.loads(out)]

    code, out, err = tide("endpoint", "update", "lifecycle", "--max", "5", "--image", "dir:///srv/echo2")
    assert code == 0, err
    assert "version 2" in out
    code, out, _ = tide("endpoint", "update", "lifecycle", "--min", "1", "--json")
    updated = json.loads(out)
    assert (updated["workersMin"], updated["workersMax"], updated["version"]) == (1, 5, 2)  # scaling: no bump

    code, out, _ = tide("endpoint", "delete", "lifecycle")
    assert code == 0 and "deleted endpoint lifecycle" in out
    code, _, err = tide("endpoint", "delete", "lifecycle")
    assert code == 1 and "not found" in err and "hint:" in err


def test_endpoint_create_from_file_with_flag_override(tide: Run, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "fromfile", "image": "dir:///srv/a", "workersMax": 4, "gpuCount": 2}))
    code, out, err = tide("endpoint", "create", "--from-file", str(spec), "--max", "6", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert (created["id"], created["workersMax"], created["gpuCount"]) == ("fromfile", 6, 2)
    code, _, err = tide("endpoint", "create", "--from-file", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read" in err


def test_validation_errors_name_the_flag(tide: Run) -> None:
    code, out, err = tide("endpoint", "create", "badrange", "--image", "i", "--min", "3", "--max", "1")
    assert code == 1 and out == ""
    assert "workersMin (3) must not exceed workersMax (1)" in err
    assert "hint: fix --min / --max" in err
    code, _, err = tide("endpoint", "create", "ninegpus", "--image", "i", "--gpu-count", "9")
    assert code == 1
    assert "gpuCount" in err and "--gpu-count" in err
    code, _, err = tide("endpoint", "create", "ninegpus", "--image", "i", "--gpu-count", "9", "--json")
    assert code == 1 and json.loads(err)["status"] == 400
    _create(tide, "dupe")
    code, _, err = tide("endpoint", "create", "dupe", "--image", "i")
    assert code == 1 and "already exists" in err
    code, _, err = tide("endpoint", "update", "dupe")
    assert code == 2 and "nothing to change" in err


# -- keys ----------------------------------------------------------------------


def test_keys_create_list_revoke(tide: Run, run_at: Callable[[str, str], Run], coordinator_url: str) -> None:
    code, out, err = tide("keys", "create", "frontend", "--endpoint", "a", "--endpoint", "b")
    assert code == 0, err
    secret = out.splitlines()[1]
    assert secret.startswith("tk_") and "cannot be shown again" in err

    code, out, _ = tide("keys", "create", "ops", "--scope", "admin", "--json")
    ops = json.loads(out)
    assert ops["scope"] == "admin" and ops["key"].startswith("tk_")

    code, out, _ = tide("keys", "list", "--json")
    listed = {k["name"]: k for k in json.loads(out)}
    assert listed["frontend"]["endpointIds"] == ["a", "b"] and listed["frontend"]["scope"] == "endpoints"
    assert "key" not in listed["frontend"] and "sha256" not in listed["frontend"]
    code, out, _ = tide("keys", "list")
    assert code == 0 and "frontend" in out and "a, b" in out and secret not in out

    # the endpoints-scoped key is refused by the admin API, with a hint
    code, _, err = run_at(coordinator_url, secret)("endpoint", "list")
    assert code == 1 and "not an admin key" in err and "--scope admin" in err
    # the admin-scoped key works
    assert run_at(coordinator_url, ops["key"])("keys", "list")[0] == 0

    code, out, _ = tide("keys", "revoke", listed["frontend"]["id"])
    assert code == 0 and "revoked key frontend" in out
    code, out, _ = tide("keys", "list")
    assert any("frontend" in line and "revoked" in line for line in out.splitlines())
    code, _, err = tide("keys", "revoke", "nonexistent")
    assert code == 1 and "not found" in err


def test_bad_key_and_key_from_file_and_env(
    run_at: Callable[[str, str], Run], coordinator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_at(coordinator_url, "tk_wrong")("endpoint", "list")
    assert code == 1 and "API key is not valid" in err and "--api-key" in err
    key_file = tmp_path / "home" / ".config" / "tide" / "admin.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(ADMIN_KEY + "\n")
    assert run_at(coordinator_url, "")("endpoint", "list")[0] == 0
    key_file.unlink()
    monkeypatch.setenv("TIDE_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("TIDE_URL", coordinator_url)
    assert main(["endpoint", "list", "--json"]) == 0


# -- queue view and worker token ---------------------------------------------


def test_jobs_view(tide: Run, coordinator_url: str) -> None:
    _create(tide, "queued")
    ids = [_post(f"{coordinator_url}/v2/queued/run", {"input": {"n": i}})["id"] for i in range(3)]
    code, out, _ = tide("jobs", "queued")
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["ID", "STATUS", "CREATED"]
    assert [line.split()[0] for line in out.splitlines()[2:]] == ids  # oldest first
    assert all("IN_QUEUE" in line for line in out.splitlines()[2:])
    code, out, _ = tide("jobs", "queued", "--limit", "1", "--json")
    view = json.loads(out)
    assert [j["id"] for j in view["jobs"]] == ids[:1] and view["endpointId"] == "queued"
    code, _, err = tide("jobs", "nosuchendpoint")
    assert code == 1 and "not found" in err


def test_batch_submit_get_ls_cancel_results(tide: Run, tmp_path: Path) -> None:
    _create(tide, "batchy")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"input": {"n": i}}) + "\n" for i in range(5)) + "{bad\n")
    code, out, err = tide("batch", "submit", "batchy", str(inputs), "--sla", "90m", "--name", "n1", "--json")
    assert code == 0, err
    ref = json.loads(out)
    assert ref["status"] == "FINALIZED"
    code, out, _ = tide("batch", "get", "batchy", ref["id"])
    assert code == 0 and "6 total" in out and "1.5 h" in out
    code, out, _ = tide("batch", "ls", "batchy")
    assert code == 0 and ref["id"] in out and "n1" in out
    code, out, _ = tide("batch", "cancel", "batchy", ref["id"])
    assert code == 0 and "cancelling" in out
    code, _, err = tide("batch", "cancel", "batchy", ref["id"])
    assert code == 1 and "cancelled already" in err
    out_file = tmp_path / "out.jsonl"
    for _ in range(200):  # the leader's dispatcher drains the cancelled batch
        if json.loads(tide("batch", "get", "batchy", ref["id"], "--json")[1])["status"] == "CANCELLED":
            break
        time.sleep(0.05)
    assert tide("batch", "results", "batchy", ref["id"], "--out", str(out_file))[0] == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["CANCELLED"] * 5 + ["FAILED"] and "line 6" in rows[5]["error"]
    code, _, err = tide("batch", "submit", "batchy", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "no such file" in err
    code, _, err = tide("batch", "submit", "batchy", str(inputs), "--sla", "soon")
    assert code == 2 and "--sla" in err


def test_worker_token_env_runs_a_worker(tide: Run, coordinator_url: str) -> None:
    _create(tide, "byhand")
    code, out, _ = tide("worker-token", "byhand", "w-laptop")
    assert code == 0
    env = dict(line.split("=", 1) for line in out.splitlines())
    v2 = f"{coordinator_url}/v2/byhand"
    assert env["RUNPOD_WEBHOOK_GET_JOB"] == f"{v2}/job-take/$ID?gpu=manual"
    assert env["RUNPOD_WEBHOOK_POST_OUTPUT"] == f"{v2}/job-done/$RUNPOD_POD_ID/$ID?gpu=manual"
    assert env["RUNPOD_WEBHOOK_POST_STREAM"] == f"{v2}/job-stream/$RUNPOD_POD_ID/$ID?gpu=manual"
    assert env["RUNPOD_WEBHOOK_PING"] == f"{v2}/ping/$RUNPOD_POD_ID?gpu=manual"
    assert env["RUNPOD_POD_ID"] == "w-laptop" and env["RUNPOD_ENDPOINT_ID"] == "byhand"
    assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true" and env["RUNPOD_AI_API_KEY"].startswith("tw2h.")

    code, out, _ = tide("worker-token", "byhand", "w-laptop", "--json")
    assert json.loads(out) == env
    code, out, _ = tide("worker-token", "byhand", "w-laptop", "--shell")
    assert "export RUNPOD_WEBHOOK_PING='" in out

    # the URLs work the way the runpod SDK fills them in
    job = _post(f"{coordinator_url}/v2/byhand/run", {"input": {"x": 1}})
    take = env["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "w-laptop") + "&job_in_progress=0"
    req = urllib.request.Request(take, headers={"Authorization": env["RUNPOD_AI_API_KEY"]})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["id"] == job["id"]
    ping = env["RUNPOD_WEBHOOK_PING"].replace("$RUNPOD_POD_ID", "w-laptop") + f"&job_id={job['id']}"
    req = urllib.request.Request(ping, headers={"Authorization": env["RUNPOD_AI_API_KEY"]})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200

    code, _, err = tide("worker-token", "nosuchendpoint", "w1")
    assert code == 1 and "not found" in err


def test_connection_refused_hint(run_at: Callable[[str, str], Run]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_at(f"http://127.0.0.1:{port}", ADMIN_KEY)("endpoint", "list")
    assert code == 1 and out == ""
    assert "connection refused" in err and "is the coordinator running?" in err and "tide dev" in err


def test_cluster_commands_against_the_real_coordinator(tide: Run) -> None:
    """Whatever node routes this coordinator has, the commands either render its
    (empty) answers or say the route is missing; never a traceback."""
    for argv in (["nodes"], ["gpus"], ["workers"], ["usage", "--since", "1h"], ["status"]):
        code, out, err = tide(*argv)
        assert code == 0 or (code == 1 and "does not support" in err), (argv, err)
        code, out, err = tide(*argv, "--json")
        if code == 0:
            json.loads(out)


# -- node routes, against a stub -------------------------------------------


class _Stub:
    """A canned admin API: ``routes[(method, path)] = (status, body)``; records requests."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                stub.seen.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = self.path.split("?")[0]
                default = (404, {"error": f"no such route: {self.command} {path}"})
                status, body = stub.routes.get((self.command, path), default)
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Stub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_missing_node_routes_say_not_supported(run_at: Callable[[str, str], Run]) -> None:
    with _Stub({}) as stub:
        run = run_at(stub.url, ADMIN_KEY)
        for argv, what in [
            (["nodes"], "nodes"),
            (["gpus"], "nodes"),
            (["node", "drain", "gpu-1"], "node drain"),
            (["workers"], "workers"),
            (["logs", "w1"], "worker logs"),
            (["usage"], "usage"),
            (["status"], "cluster status"),
        ]:
            code, _, err = run(*argv)
            assert code == 1, argv
            assert f"this coordinator does not support {what} yet" in err, argv


_NOW = time.time()  # relative times below are days old, so a slow run renders the same
_NODES = [
    {
        "id": "n1",
        "inventory": {
            "hostname": "gpu-01",
            "region": "EU",
            "datacenter": "EU-RO-1",
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-a",
                    "typeId": "H100-80GB",
                    "memoryMb": 81559,
                    "migEnabled": True,
                    "migInstances": [
                        {"uuid": "MIG-1", "profile": "3g.40gb", "start": 0, "size": 4},
                        {"uuid": "MIG-2", "profile": "2g.20gb", "start": 4, "size": 2, "busy": True},
                        {"uuid": "MIG-3", "profile": "1g.10gb", "start": 6, "size": 1},
                    ],
                },
                {"index": 1, "uuid": "GPU-b", "typeId": "H100-80GB", "memoryMb": 81559, "migEnabled": False},
            ],
        },
        "lastHeartbeat": _NOW - 5,
        "draining": False,
        "lost": False,
        "workers": [{"workerId": "w-sd", "devices": ["MIG-1"]}, {"workerId": "w-llm", "devices": ["GPU-b"]}],
    },
    {
        "id": "n2",
        "inventory": {"hostname": "gpu-02", "gpus": []},
        "lastHeartbeat": _NOW - 3 * 86400 - 10,
        "draining": True,
        "lost": False,
        "workers": [],
    },
]


def test_node_commands_render_the_documented_shapes(run_at: Callable[[str, str], Run]) -> None:
    routes: dict[tuple[str, str], tuple[int, Any]] = {
        ("GET", "/admin/v1/nodes"): (200, _NODES),
        ("POST", "/admin/v1/nodes/n2/undrain"): (200, {"id": "n2", "draining": False}),
        ("GET", "/admin/v1/workers"): (
            200,
            [
                {
                    "workerId": "w-sd",
                    "endpointId": "sd",
                    "nodeId": "n1",
                    "gpuType": "H100-80GB:3g.40gb",
                    "devices": ["MIG-1"],
                    "state": "running",
                    "restarts": 1,
                    "startedAt": _NOW - 2 * 86400 - 10,
                }
            ],
        ),
        ("GET", "/admin/v1/workers/w-sd/logs"): (200, {"lines": ["loading model", "ready"]}),
        ("GET", "/admin/v1/usage"): (
            200,
            {
                "rows": [
                    {"endpointId": "sd", "gpuType": "H100-80GB:3g.40gb", "gpuSeconds": 7200, "cost": 1.5}
                ],
                "totalGpuSeconds": 7200,
                "totalCost": 1.5,
                "currency": "USD",
            },
        ),
        ("GET", "/admin/v1/status"): (
            200,
            {
                "endpoints": 2,
                "queued": 3,
                "running": 1,
                "workers": {"running": 1, "idle": 0},
                "capacity": [{"gpuType": "H100-80GB", "region": "EU", "total": 2, "free": 1}],
            },
        ),
    }
    with _Stub(routes) as stub:
        run = run_at(stub.url, ADMIN_KEY)
        code, out, _ = run("nodes")
        assert code == 0
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert "gpu-01" in rows["n1"] and "2x H100-80GB" in rows["n1"] and rows["n1"].endswith("ready")
        assert rows["n2"].endswith("draining") and "3d ago" in rows["n2"]
        code, out, _ = run("nodes", "--json")
        assert json.loads(out) == _NODES

        code, out, _ = run("gpus")
        assert code == 0
        assert "[3g.40gb*          ][2g.20gb*][1g ][...]" in out  # MIG-1 by w-sd, MIG-2 busy
        assert "2/3 in use" in out and "w-sd:3g.40gb" in out and "whole GPU, w-llm" in out

        code, out, _ = run("gpus", "--json")
        cards = json.loads(out)
        assert [(c["hostname"], c["index"], c["grid"]) for c in cards] == [("gpu-01", 0, 8), ("gpu-01", 1, 0)]
        assert [i["workerId"] for i in cards[0]["instances"]] == ["w-sd", "", ""]

        code, out, _ = run("node", "undrain", "gpu-02")  # by hostname
        assert code == 0 and "n2 is back in service" in out
        assert ("POST", "/admin/v1/nodes/n2/undrain") in stub.seen
        code, _, err = run("node", "drain", "gpu-99")
        assert code == 1 and "no node 'gpu-99'" in err and "n1, n2" in err

        code, out, _ = run("workers", "--endpoint", "sd")
        assert code == 0 and "w-sd" in out and "2d ago" in out
        assert ("GET", "/admin/v1/workers?endpoint=sd") in stub.seen
        code, out, _ = run("logs", "w-sd", "--tail", "2")
        assert out == "loading model\nready\n"
        assert ("GET", "/admin/v1/workers/w-sd/logs?tail=2") in stub.seen

        before = int(time.time())
        code, out, _ = run("usage", "--since", "1h", "--endpoint", "sd")
        after = int(time.time())
        assert code == 0 and "1.50 USD" in out and "TOTAL" in out
        assert out.splitlines()[1].split() == ["sd", "H100-80GB:3g.40gb", "2h", "1.50", "USD"]
        query = next(p for m, p in stub.seen if p.startswith("/admin/v1/usage"))
        since = int(query.split("since=")[1])
        assert before - 3600 - 1 <= since <= after - 3600 and "endpoint=sd" in query

        code, out, _ = run("status")
        assert code == 0 and "3 queued, 1 running" in out and "1 running" in out
        assert any(line.split() == ["H100-80GB", "EU", "1", "2"] for line in out.splitlines())
        code, out, _ = run("status", "--json")
        assert json.loads(out)["queued"] == 3


def test_endpoint_get_shows_why_not_placed(run_at: Callable[[str, str], Run]) -> None:
    endpoint = {
        "id": "big", "name": "big", "image": "i", "gpuTypeIds": ["B200-180GB"], "gpuCount": 8,
        "health": {"jobs": {"inQueue": 4}, "workers": {"initializing": 1}},
        "placement": {"reason": "no host has 8 free B200-180GB (largest: 4 on gpu-03)"},
    }  # fmt: skip
    with _Stub({("GET", "/admin/v1/endpoints/big"): (200, endpoint)}) as stub:
        code, out, _ = run_at(stub.url, ADMIN_KEY)("endpoint", "get", "big")
    assert code == 0
    assert "not placed:  no host has 8 free B200-180GB (largest: 4 on gpu-03)" in out
    assert "8x B200-180GB" in out and "4 queued" in out and "1 initializing" in out


# -- dev hand-off and pure helpers -------------------------------------------


def test_dev_hands_its_arguments_to_tide_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("tide.dev")

    def fake_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 7

    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tide.dev", fake)
    assert main(["dev", "--help"]) == 7
    assert main(["--json", "dev", "--gpus", "2xH100", "--port", "0"]) == 7
    assert seen == [["--help"], ["--gpus", "2xH100", "--port", "0"]]


def test_render_bar() -> None:
    insts = [
        {"profile": "1g.10gb", "start": 6, "size": 1},
        {"profile": "3g.40gb", "start": 0, "size": 4, "busy": True},
    ]
    assert render_bar(insts, 8) == "[3g.40gb*          ][........][1g ][...]"  # 5 chars a slice
    assert render_bar([], 8) == "[" + "." * 38 + "]"
    assert render_bar([], 8, owner="w1") == "[w1*" + " " * 35 + "]"
    seven = [{"profile": "1g.10gb", "start": i, "size": 1} for i in range(7)]
    assert render_bar(seven, 8) == "[1g ]" * 7 + "[...]"
    twelve = [{"profile": "1g.24gb", "start": 3, "size": 3, "busy": True}]  # RTX PRO 6000: 12 slices
    assert render_bar(twelve, 12) == "[.......][1g*    ][" + "." * 16 + "]"


def test_parse_since_and_formatting() -> None:
    now = 1_750_000_000.0
    assert parse_since("30m", now) == now - 1800
    assert parse_since("1h30m", now) == now - 5400
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2025-06-15T15:06:40+00:00", now) == now
    assert (duration(45), duration(125), duration(3 * 3600 + 300), duration(2 * 86400 + 3600)) == (
        "45s",
        "2m5s",
        "3h5m",
        "2d1h",
    )
    assert (ago(now - 90, now), ago(None, now), ago(now + 3600, now)) == ("1m30s ago", "-", "in 1h")
    assert table(["A", "BB"], [["xxx", 1]]) == "A    BB\nxxx  1"
    assert table(["A"], [], empty="none") == "none"
