"""`make demo`: Tide end to end on this machine in about a minute.

Starts `tide dev` (coordinator + 2 node agents with simulated GPUs), deploys
three endpoints from examples/, sends requests with the unmodified `runpod`
client (runsync, run + status, stream), shows workers scaling up from zero
and back to zero, prints each request's delay and execution times and the
usage report, then stops everything and exits 0.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import runpod

HERE = Path(__file__).resolve().parent
KEY = "tk_demo_" + secrets.token_hex(8)


def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def start_cluster(state: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "tide.dev",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--nodes",
        "2",
        "--gpus",
        "1xH100-80GB,1xRTXPRO6000-96GB",
        "--state-dir",
        str(state),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.time() + 60
    for line in proc.stdout:
        print("  [tide dev]", line.rstrip())
        found = re.search(r"ready: (http://\S+)", line)
        if found:
            return proc, found.group(1)
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit("tide dev did not start; run `python -m tide.dev --log-level INFO` to see why")


def workers_line(url: str, t0: float) -> str:
    rows = admin(url, "GET", "/admin/v1/workers")
    by_ep: dict[str, list[str]] = {}
    for w in rows:
        by_ep.setdefault(w["endpointId"], []).append(
            f"{w['workerId'][-4:]}@{w['nodeId']}/{w['gpuType']}:{w['state']}"
        )
    parts = [f"{ep}={len(ws)} [{', '.join(ws)}]" for ep, ws in sorted(by_ep.items())] or ["no workers"]
    return f"  t={time.time() - t0:5.1f}s  " + "  ".join(parts)


def running(url: str) -> list[dict[str, Any]]:
    """Workers that hold a GPU: a suspended one is frozen in host RAM, not billed, and its GPU is
    free (issue 16), so an endpoint whose workers are all suspended is at zero."""
    return [w for w in admin(url, "GET", "/admin/v1/workers") if w["state"] != "suspended"]


def watch_until(url: str, t0: float, done: Any, timeout: float) -> None:
    last = ""
    end = time.time() + timeout
    while time.time() < end and not done():
        line = workers_line(url, t0)
        if line.split("s ", 1)[1] != last:
            print(line)
            last = line.split("s ", 1)[1]
        time.sleep(0.5)
    print(workers_line(url, t0))


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="tide-demo-"))
    proc, url = start_cluster(state)
    try:
        return demo(url)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def demo(url: str) -> int:
    print(f"\n== Tide is up at {url}; deploying three endpoints (all scaled to zero)")
    common = {"workersMin": 0, "idleTimeout": 3, "scalerType": "REQUEST_COUNT", "scalerValue": 1}
    admin(
        url,
        "POST",
        "/admin/v1/endpoints",
        {"name": "echo", "image": f"dir://{HERE / 'echo'}", "workersMax": 3, **common},
    )
    admin(
        url,
        "POST",
        "/admin/v1/endpoints",
        {
            "name": "echo-stream",
            "image": f"dir://{HERE / 'echo'}",
            "command": ["python", "-u", "stream_handler.py"],
            "workersMax": 1,
            **common,
        },
    )
    admin(
        url,
        "POST",
        "/admin/v1/endpoints",
        {
            "name": "torch-mlp",
            "image": f"dir://{HERE / 'torch-mlp'}",
            "env": {"PYTHONPATH": str(HERE.parent)},  # flashboot, for venvs without Tide installed
            "gpuTypeIds": ["RTXPRO6000-96GB", "H100-80GB"],
            "workersMax": 1,
            **common,
        },
    )
    runpod.endpoint_url_base = url + "/v2"
    t0 = time.time()
    timings: list[tuple[str, dict[str, Any]]] = []

    print("\n== runsync on echo (cold start from zero workers)")
    echo = runpod.Endpoint("echo", api_key=KEY)
    job = echo.run({"input": {"hello": "tide"}})
    print("  output:", job.output(timeout=60))
    timings.append(("echo run (cold)", admin_status(url, "echo", job.job_id)))

    print("\n== a burst of 6 one-second jobs on echo: watch it scale toward workersMax=3")
    jobs = [echo.run({"input": {"sleep": 1, "n": i}}) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        outputs = pool.map(lambda j: j.output(timeout=120), jobs)
        watch_until(url, t0, lambda: all(j.status() == "COMPLETED" for j in jobs), 90)
    print("  outputs:", [o["echo"]["n"] for o in outputs])
    timings += [(f"echo burst #{i}", admin_status(url, "echo", j.job_id)) for i, j in enumerate(jobs)]

    print("\n== stream from a generator handler")
    streamer = runpod.Endpoint("echo-stream", api_key=KEY)
    sjob = streamer.run({"input": {"text": "tokens arrive one at a time"}})
    words = [chunk["word"] for chunk in sjob.stream()]
    print("  streamed:", words)
    timings.append(("echo-stream", admin_status(url, "echo-stream", sjob.job_id)))

    print("\n== torch-mlp: a small torch model on the RTX PRO 6000 (falls back to H100 if busy)")
    mlp = runpod.Endpoint("torch-mlp", api_key=KEY)
    out = mlp.run_sync({"input": {"x": [[0.1] * 16, [0.5] * 16]}}, timeout=120)
    print(f"  y[0] = {[round(v, 4) for v in out['y'][0]]}   weights loaded in {out['load_s']}s")

    print("\n== per-request times (ms)")
    print(f"  {'request':<18} {'status':<10} {'delayTime':>9} {'executionTime':>13}  worker")
    for name, st in timings:
        delay, execution = st.get("delayTime", 0), st.get("executionTime", 0)
        print(f"  {name:<18} {st['status']:<10} {delay:>9} {execution:>13}  {st.get('workerId', '')}")

    print(
        "\n== idle: every endpoint scales back to zero after idleTimeout (3 s); idle workers are"
        " suspended (frozen in host RAM, not billed, GPU free) instead of stopped"
    )
    watch_until(url, t0, lambda: not running(url), 60)

    print(
        "\n== torch-mlp again, from zero: its suspended worker resumes in place"
        " (a fresh worker would restore the weights from FlashBoot's T1)"
    )
    job = mlp.run({"input": {"x": [[0.1] * 16, [0.5] * 16]}})
    again = job.output(timeout=120)
    print(f"  same output: {again['y'] == out['y']}   weights from {again['tier']} (shared RAM)")
    cold = cold_start(url, "torch-mlp", job.job_id)
    print("  cold start: " + ", ".join(f"{s['stage']} {s['ms']:.0f} ms" for s in cold.get("stages", [])))
    watch_until(url, t0, lambda: not running(url), 60)

    usage = admin(url, "GET", "/admin/v1/usage")
    print("\n== usage (GPU-seconds, billed per second of worker lifetime)")
    for row in usage["rows"]:
        print(
            f"  {row['endpointId']:<12} {row['gpuType']:<18} {row['gpuSeconds']:>8.1f} s  ${row['cost']:.5f}"
        )
    print(f"  total {usage['totalGpuSeconds']:.1f} GPU-s  ${usage['totalCost']:.5f}")
    left, suspended = running(url), len(admin(url, "GET", "/admin/v1/workers")) - len(running(url))
    print(
        "\n== demo finished:",
        f"all endpoints at zero running workers ({suspended} suspended)"
        if not left
        else f"{len(left)} workers still up",
    )
    return 0


def cold_start(url: str, ep: str, job_id: str) -> dict[str, Any]:
    """The job's coldStart, once the worker's own stages have joined it (a moment after)."""
    cold: dict[str, Any] = {}
    for _ in range(50):
        cold = admin_status(url, ep, job_id).get("coldStart") or {}
        if cold.get("complete"):
            break
        time.sleep(0.1)
    return cold


def admin_status(url: str, ep: str, job_id: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/v2/{ep}/status/{job_id}", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
